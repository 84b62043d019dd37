package server

import (
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits of the API. The migration mirrors them as CHECK constraints.
const (
	maxOIDCSubject = 255 // OpenID Connect caps "sub" at 255 ASCII characters
	maxName        = 256
	maxEmail       = 254 // RFC 5321's path limit, less the angle brackets
	maxPhotoURL    = 2048
	maxBatchIDs    = 100
)

// violations collects field violations; err turns them into one
// INVALID_ARGUMENT status carrying a google.rpc.BadRequest.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	msgs := make([]string, len(v))
	for i, fv := range v {
		msgs[i] = fv.GetField() + " " + fv.GetDescription()
	}
	st, err := status.New(codes.InvalidArgument, "invalid request: "+strings.Join(msgs, "; ")).
		WithDetails(&errdetails.BadRequest{FieldViolations: v})
	if err != nil { // only if the details cannot be marshalled
		return status.Error(codes.InvalidArgument, "invalid request: "+strings.Join(msgs, "; "))
	}
	return st.Err()
}

// text checks the rules every string shares: no NUL byte (PostgreSQL's text
// type cannot hold one) and at most max characters. It reports whether s
// passed, so that callers add at most one violation per field.
func (v *violations) text(field, s string, max int) bool {
	if strings.IndexByte(s, 0) >= 0 {
		v.add(field, "must not contain NUL bytes")
		return false
	}
	if n := utf8.RuneCountInString(s); n > max {
		v.add(field, "must be at most %d characters, got %d", max, n)
		return false
	}
	return true
}

func (v *violations) oidcSubject(field, s string) {
	if s == "" {
		v.add(field, "is required")
		return
	}
	v.text(field, s, maxOIDCSubject)
}

func (v *violations) name(field, s string) {
	v.text(field, s, maxName)
}

// email accepts "" or one bare address ("a@example.com", not
// "A <a@example.com>" nor a list).
func (v *violations) email(field, s string) {
	if !v.text(field, s, maxEmail) || s == "" {
		return
	}
	if addr, err := mail.ParseAddress(s); err != nil || addr.Name != "" || addr.Address != s {
		v.add(field, "must be a single email address such as user@example.com")
	}
}

// photoURL accepts "" or an absolute http or https URL with a host.
func (v *violations) photoURL(field, s string) {
	if !v.text(field, s, maxPhotoURL) || s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (!strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https")) || u.Host == "" {
		v.add(field, "must be an absolute http or https URL")
	}
}

// identityID parses a UUID in its canonical 36-character form; other forms
// that uuid.Parse would take (braces, urn:uuid:, no hyphens) are refused so
// that every client spells ids the way the service returns them.
func (v *violations) identityID(field, s string) uuid.UUID {
	id, ok := parseIdentityID(s)
	if !ok {
		v.add(field, badIdentityID)
	}
	return id
}

const badIdentityID = "must be a UUID such as 01890a5d-ac96-774b-bcce-b302099a8057"

func parseIdentityID(s string) (uuid.UUID, bool) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, false
	}
	return id, true
}

// identityIDs parses a batch of at most maxBatchIDs ids, naming each bad
// one by its index.
func (v *violations) identityIDs(field string, ss []string) []uuid.UUID {
	if len(ss) > maxBatchIDs {
		v.add(field, "must have at most %d entries, got %d", maxBatchIDs, len(ss))
		return nil
	}
	ids := make([]uuid.UUID, len(ss))
	for i, s := range ss {
		var ok bool
		// The field name is formatted only for a bad id: a batch of
		// good ones is the hot path.
		if ids[i], ok = parseIdentityID(s); !ok {
			v.add(fmt.Sprintf("%s[%d]", field, i), badIdentityID)
		}
	}
	return ids
}
