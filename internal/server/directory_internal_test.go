package server

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestPageTokenRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		id   uuid.UUID
	}{
		{"the nil id comes back", uuid.Nil},
		{"the greatest id comes back", uuid.Max},
		{"a time-ordered id comes back", uuid.Must(uuid.Parse("01890a5d-ac96-774b-bcce-b302099a8057"))},
		{"a random id comes back", uuid.Must(uuid.Parse("f47ac10b-58cc-4372-a567-0e02b2c3d479"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			token := pageToken(tc.id)
			// The token travels in URLs and JSON: no padding, no "+" or
			// "/".
			if strings.ContainsAny(token, "=+/") {
				t.Errorf("pageToken(%s) = %q, want unpadded base64url", tc.id, token)
			}
			got, ok := parsePageToken(token)
			if !ok || got != tc.id {
				t.Errorf("parsePageToken(pageToken(%s)) = %s, %t; want %s, true", tc.id, got, ok, tc.id)
			}
		})
	}
}

func TestParsePageTokenOfNothingIsTheFirstPage(t *testing.T) {
	t.Parallel()
	got, ok := parsePageToken("")
	if !ok || got != uuid.Nil {
		t.Errorf(`parsePageToken("") = %s, %t; want %s, true`, got, ok, uuid.Nil)
	}
}

func TestParsePageTokenRefusesWhatPageTokenDidNotWrite(t *testing.T) {
	t.Parallel()
	id := uuid.Must(uuid.Parse("01890a5d-ac96-774b-bcce-b302099a8057"))
	valid := pageToken(id)
	raw, err := base64.RawURLEncoding.DecodeString(valid)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte{}, raw...)
	flipped[5] ^= 0x01
	otherVersion := append([]byte{}, raw...)
	otherVersion[0] = pageTokenVersion + 1
	enc := base64.RawURLEncoding.EncodeToString

	for _, tc := range []struct {
		name, token string
	}{
		{"text that is not base64 is refused", "!!!"},
		{"a bare UUID is refused", id.String()},
		{"the base64 of a UUID alone is refused", enc(id[:])},
		{"a token with one bit flipped is refused", enc(flipped)},
		{"a token of another version is refused", enc(otherVersion)},
		{"a token cut short is refused", valid[:len(valid)-1]},
		{"a token with a byte more is refused", enc(append(append([]byte{}, raw...), 0))},
		{"a token with a line break inside is refused", valid[:10] + "\n" + valid[10:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, ok := parsePageToken(tc.token); ok {
				t.Errorf("parsePageToken(%q) = %s, true; want it refused", tc.token, got)
			}
		})
	}
}

// FuzzPageToken holds the codec to what a client can rely on: whatever it
// sends, parsing neither panics nor takes two spellings for one place in
// the list, so any token accepted is the one the service wrote for it.
func FuzzPageToken(f *testing.F) {
	f.Add("")
	f.Add("!!!")
	f.Add(pageToken(uuid.Nil))
	f.Add(pageToken(uuid.Max))
	f.Add(pageToken(uuid.Must(uuid.Parse("01890a5d-ac96-774b-bcce-b302099a8057"))))
	f.Fuzz(func(t *testing.T, token string) {
		id, ok := parsePageToken(token)
		if !ok {
			return
		}
		if token == "" {
			if id != uuid.Nil {
				t.Fatalf(`parsePageToken("") = %s, want %s`, id, uuid.Nil)
			}
			return
		}
		if again := pageToken(id); again != token {
			t.Fatalf("parsePageToken(%q) accepted %s, whose token is %q", token, id, again)
		}
	})
}
