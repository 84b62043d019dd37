package server

import (
	"encoding/hex"
	"net/mail"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzValidators holds each validator to its documented rule, for any
// input: it never panics, and it accepts exactly what the rule allows.
// Seeds live in testdata/fuzz/FuzzValidators.
func FuzzValidators(f *testing.F) {
	for _, s := range []string{"", "a", "auth0|abc", "a@example.com", "https://example.com/p.png", "01890a5d-ac96-774b-bcce-b302099a8057", "\x00", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		clean := !strings.Contains(s, "\x00")
		runes := utf8.RuneCountInString(s)

		var v violations
		v.oidcSubject("f", s)
		if want := clean && runes >= 1 && runes <= maxOIDCSubject; (v.count() == 0) != want {
			t.Errorf("oidcSubject(%q) accepted=%v, want %v", s, v.count() == 0, want)
		}

		v = violations{}
		v.name("f", s)
		if want := clean && runes <= maxName; (v.count() == 0) != want {
			t.Errorf("name(%q) accepted=%v, want %v", s, v.count() == 0, want)
		}

		v = violations{}
		v.email("f", s)
		if v.count() == 0 && s != "" {
			addr, err := mail.ParseAddress(s)
			if !clean || runes > maxEmail || err != nil || addr.Address != s {
				t.Errorf("email(%q) accepted an invalid address", s)
			}
		}
		if v.count() > 1 {
			t.Errorf("email(%q) gave %d violations for one field", s, v.count())
		}

		v = violations{}
		v.photoURL("f", s)
		if v.count() == 0 && s != "" {
			u, err := url.Parse(s)
			if !clean || runes > maxPhotoURL || err != nil || u.Host == "" ||
				(strings.ToLower(u.Scheme) != "http" && strings.ToLower(u.Scheme) != "https") {
				t.Errorf("photoURL(%q) accepted an invalid URL", s)
			}
		}

		v = violations{}
		id := v.identityID("f", s)
		if v.count() == 0 && id.String() != strings.ToLower(s) {
			t.Errorf("identityID(%q) accepted it as %s", s, id)
		}

		v = violations{}
		v.tokenName("f", s)
		if want := clean && runes >= 1 && runes <= maxTokenName && strings.IndexFunc(s, unicode.IsControl) < 0; (v.count() == 0) != want {
			t.Errorf("tokenName(%q) accepted=%v, want %v", s, v.count() == 0, want)
		}

		// A hash is 64 hex digits, read in lower case; no description
		// quotes it.
		v = violations{}
		hash := v.tokenHash("f", s)
		_, hexErr := hex.DecodeString(s)
		if want := len(s) == 64 && hexErr == nil; (v.count() == 0) != want {
			t.Errorf("tokenHash(%q) accepted=%v, want %v", s, v.count() == 0, want)
		}
		if v.count() == 0 && hash != strings.ToLower(s) {
			t.Errorf("tokenHash(%q) = %q, want it in lower case", s, hash)
		}
		for _, d := range v.named {
			if len(s) >= 48 && strings.Contains(d.GetDescription(), s) { // shorter ones may be words of it
				t.Errorf("tokenHash's description %q quotes the input", d.GetDescription())
			}
		}
	})
}
