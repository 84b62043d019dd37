package server

import (
	"strings"
	"testing"
	"unicode/utf8"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// Every list a client can send has a bound, so that requestCodec can
// refuse an overlong one by its length before it looks at the entries.
func TestEveryRepeatedRequestFieldHasABound(t *testing.T) {
	t.Parallel()
	methods := usersv1.File_agynio_api_users_v1_users_proto.Services().ByName("UsersService").Methods()
	for i := range methods.Len() {
		fields := methods.Get(i).Input().Fields()
		for j := range fields.Len() {
			if fd := fields.Get(j); fd.IsList() {
				if _, ok := maxEntries[fd.FullName()]; !ok {
					t.Errorf("%s is repeated and has no bound in maxEntries", fd.FullName())
				}
			}
		}
	}
}

// A log line holds at most maxLoggedMessage bytes of a status message, cut
// at a character boundary.
func TestClip(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{
		"short",
		strings.Repeat("a", maxLoggedMessage),
		strings.Repeat("a", 900_000),
		strings.Repeat("é", maxLoggedMessage), // two bytes each: the cut falls inside one
	} {
		got := clip(msg, maxLoggedMessage)
		if len(msg) <= maxLoggedMessage {
			if got != msg {
				t.Errorf("clip of %d bytes changed it", len(msg))
			}
			continue
		}
		if len(got) > maxLoggedMessage+64 || !utf8.ValidString(got) || !strings.Contains(got, "truncated") {
			t.Errorf("clip of %d bytes = %d bytes, valid UTF-8 %v: %q...", len(msg), len(got), utf8.ValidString(got), got[:40])
		}
	}
}
