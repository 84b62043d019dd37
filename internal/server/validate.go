package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// Limits of the API. The migration mirrors them as CHECK constraints.
const (
	maxOIDCSubject = 255 // OpenID Connect caps "sub" at 255 ASCII characters
	maxName        = 256
	maxEmail       = 254 // RFC 5321's path limit, less the angle brackets
	maxPhotoURL    = 2048
	maxBatchIDs    = 100
	maxNickname    = 256
	maxUsername    = 32
	maxTokenName   = 100
)

// Bounds of the directory and the listing.
const (
	defaultSearchLimit = 10
	maxSearchLimit     = 20
	defaultPageSize    = 50
	maxPageSize        = 100
)

// maxEntries is the bound of each repeated request field, by full name.
// The validators hold a list to it; requestCodec refuses a longer list by
// its length alone, before it looks at any entry.
var maxEntries = map[protoreflect.FullName]int{
	"agynio.api.users.v1.BatchGetUsersRequest.identity_ids": maxBatchIDs,
}

// maxViolations is how many field violations an answer names; the rest are
// only counted. However bad a request, its answer and log line stay a few
// hundred bytes: a batch of 21,000 bad ids once drew a 1.8 MB answer. Six
// is the most one request needs named: UpdateUser with none of its six
// fields set.
const maxViolations = 6

// violations collects field violations; err turns them into one
// INVALID_ARGUMENT status carrying a google.rpc.BadRequest.
type violations struct {
	named []*errdetails.BadRequest_FieldViolation // at most maxViolations
	more  int                                     // past those, counted only
}

func (v *violations) add(field, format string, args ...any) {
	if len(v.named) == maxViolations {
		v.more++
		return
	}
	v.named = append(v.named, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// count is how many violations were added.
func (v *violations) count() int { return len(v.named) + v.more }

// tooMany is the violation of a list longer than its bound.
func (v *violations) tooMany(field string, max, n int) {
	v.add(field, "must have at most %d entries, got %d", max, n)
}

func (v *violations) err() error {
	if st := v.status(); st != nil {
		return st.Err()
	}
	return nil
}

// status is the INVALID_ARGUMENT status of the violations, nil if none:
// the named ones in its message and details, then how many more.
func (v *violations) status() *status.Status {
	if len(v.named) == 0 {
		return nil
	}
	var msg strings.Builder
	msg.WriteString("invalid request: ")
	for i, fv := range v.named {
		if i > 0 {
			msg.WriteString("; ")
		}
		msg.WriteString(fv.GetField() + " " + fv.GetDescription())
	}
	if v.more > 0 {
		fmt.Fprintf(&msg, "; and %d more", v.more)
	}
	st, err := status.New(codes.InvalidArgument, msg.String()).
		WithDetails(&errdetails.BadRequest{FieldViolations: v.named})
	if err != nil { // only if the details cannot be marshalled
		return status.New(codes.InvalidArgument, msg.String())
	}
	return st
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
		v.tooMany(field, maxBatchIDs, len(ss))
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

// usernameChars reports whether s is a username: 1 to maxUsername
// characters of [a-z0-9_-] (the CHECK users_username_format holds the
// database to the same).
func usernameChars(s string) bool {
	if len(s) == 0 || len(s) > maxUsername {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (v *violations) username(field, s string) {
	if !usernameChars(s) {
		v.add(field, "must be 1 to %d characters of a-z, 0-9, _ and -", maxUsername)
	}
}

func (v *violations) nickname(field, s string) {
	v.text(field, s, maxNickname)
}

// clusterRole accepts the roles the API defines.
func (v *violations) clusterRole(field string, r usersv1.ClusterRole) {
	if _, ok := usersv1.ClusterRole_name[int32(r)]; !ok {
		v.add(field, "must be CLUSTER_ROLE_UNSPECIFIED or CLUSTER_ROLE_ADMIN, got %d", int32(r))
	}
}

// searchPrefix accepts what a username can start with.
func (v *violations) searchPrefix(field, s string) {
	if !usernameChars(s) {
		v.add(field, "must be 1 to %d characters of a-z, 0-9, _ and -", maxUsername)
	}
}

// searchLimit is limit, or its default for 0.
func (v *violations) searchLimit(field string, n int32) int32 {
	switch {
	case n == 0:
		return defaultSearchLimit
	case n < 1 || n > maxSearchLimit:
		v.add(field, "must be between 1 and %d (0 means %d), got %d", maxSearchLimit, defaultSearchLimit, n)
	}
	return n
}

// pageSize is n, its default for 0, and at most maxPageSize.
func (v *violations) pageSize(field string, n int32) int32 {
	switch {
	case n == 0:
		return defaultPageSize
	case n < 0:
		v.add(field, "must not be negative, got %d", n)
	case n > maxPageSize:
		return maxPageSize
	}
	return n
}

// tokenName is an API token's name: 1 to maxTokenName characters, none
// of them a control character (names are shown in lists and terminals).
func (v *violations) tokenName(field, s string) {
	if s == "" {
		v.add(field, "is required")
		return
	}
	if !v.text(field, s, maxTokenName) {
		return
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		v.add(field, "must not contain control characters")
	}
}

// futureTime is ts, which must be a valid timestamp after now.
func (v *violations) futureTime(field string, ts *timestamppb.Timestamp, now time.Time) *time.Time {
	if err := ts.CheckValid(); err != nil {
		v.add(field, "must be a valid timestamp between years 1 and 9999")
		return nil
	}
	t := ts.AsTime()
	if !t.After(now) {
		v.add(field, "must be in the future")
		return nil
	}
	return &t
}

// tokenHash is a token's SHA-256 as the database stores it, 64 lowercase
// hex digits; upper-case digits are taken too. The description never
// quotes the value: a hash is as secret as its token.
func (v *violations) tokenHash(field, s string) string {
	if len(s) != sha256.Size*2 {
		v.add(field, "must be the token's SHA-256 as 64 hex digits, got %d characters", utf8.RuneCountInString(s))
		return ""
	}
	if _, err := hex.DecodeString(s); err != nil {
		v.add(field, "must be the token's SHA-256 as 64 hex digits")
		return ""
	}
	return strings.ToLower(s)
}
