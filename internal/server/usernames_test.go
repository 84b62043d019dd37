package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// subjectUsername is the username derived when no claim gives one: "user-"
// and the first 8 hex digits of the subject's SHA-256.
func subjectUsername(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return "user-" + hex.EncodeToString(sum[:])[:8]
}

// The derivation lives only in SQL (users_username_base), so that logins,
// CreateUser and the migration's backfill agree; this table asks the
// database directly.
func TestUsernameBase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name                   string
		preferred, email, full *string // NULL when nil
		subject                string
		want                   string
	}{
		{
			name:      "preferred_username wins over email and name",
			preferred: new("alice"), email: new("bob@example.com"), full: new("Carol"), subject: "s",
			want: "alice",
		},
		{
			name:      "an empty preferred_username falls to the email's local part",
			preferred: new(""), email: new("bob@example.com"), full: new("Carol"), subject: "s",
			want: "bob",
		},
		{
			name:      "an all-symbol preferred_username falls to the email's local part",
			preferred: new("!!!"), email: new("bob@example.com"), full: new("Carol"), subject: "s",
			want: "bob",
		},
		{
			name:  "no preferred_username at all falls to the email's local part",
			email: new("bob@example.com"), full: new("Carol"), subject: "s",
			want: "bob",
		},
		{
			name:  "dots and plus in the local part become dashes",
			email: new("John.Doe+tag@x.com"), subject: "s",
			want: "john-doe-tag",
		},
		{
			name:  "the local part ends at the last @",
			email: new(`"a@b"@x.com`), subject: "s",
			want: "a-b",
		},
		{
			name:  "an email without @ has no local part and falls to the name",
			email: new("token-user"), full: new("Carol"), subject: "s",
			want: "carol",
		},
		{
			name:  "an email with an empty local part falls to the name",
			email: new("@x.com"), full: new("Carol"), subject: "s",
			want: "carol",
		},
		{
			name: "spaces and non-ASCII letters in the name become one dash each run",
			full: new("Zoë Smith"), subject: "s",
			want: "zo-smith",
		},
		{
			name:      "upper case is lowered",
			preferred: new("ALICE"), subject: "s",
			want: "alice",
		},
		{
			name:      "a run of other characters becomes one dash",
			preferred: new("a!!!b   c.,;d"), subject: "s",
			want: "a-b-c-d",
		},
		{
			name:      "leading and trailing dashes are trimmed",
			preferred: new("--alice--"), subject: "s",
			want: "alice",
		},
		{
			name:      "leading and trailing symbols are trimmed once they are dashes",
			preferred: new("  (alice)  "), subject: "s",
			want: "alice",
		},
		{
			name:      "underscores and inner dashes are kept",
			preferred: new("_a_b-c_"), subject: "s",
			want: "_a_b-c_",
		},
		{
			name:      "a long preferred_username is cut to 32 characters",
			preferred: new(strings.Repeat("ab", 30)), subject: "s",
			want: strings.Repeat("ab", 16),
		},
		{
			name:      "the cut is of the normalised text, not of the claim",
			preferred: new(strings.Repeat("é", 10) + strings.Repeat("x", 40)), subject: "s",
			want: strings.Repeat("x", 32),
		},
		{
			name:    "nothing usable gives user- and the subject's digest",
			subject: "auth0|nobody",
			want:    subjectUsername("auth0|nobody"),
		},
		{
			name:      "claims that normalise to nothing give user- and the subject's digest",
			preferred: new("!!!"), email: new("@x.com"), full: new("---"), subject: "google-oauth2|1234",
			want: subjectUsername("google-oauth2|1234"),
		},
		{
			name:      "the digest is of the subject's UTF-8 bytes",
			preferred: new(""), email: new(""), full: new(""), subject: "ünïcode",
			want: subjectUsername("ünïcode"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got string
			err := e.conn.QueryRow(t.Context(), "SELECT users_username_base($1, $2, $3, $4)",
				tc.preferred, tc.email, tc.full, tc.subject).Scan(&got)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("users_username_base = %q, want %q", got, tc.want)
			}
		})
	}
}

// Logins derive through the same function: what the table above shows is
// what a user gets.
func TestLoginDerivesUsername(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		req  *usersv1.ResolveOrCreateUserRequest
		want string
	}{
		{
			name: "preferred_username is lowered",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s1", PreferredUsername: new("Alice"), Email: "zed@example.com", Name: "Zed"},
			want: "alice",
		},
		{
			name: "the email's local part serves without preferred_username",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s2", Email: "John.Doe+tag@x.com", Name: "Zed"},
			want: "john-doe-tag",
		},
		{
			name: "the name serves without preferred_username or email",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s3", Name: "Zoë Smith"},
			want: "zo-smith",
		},
		{
			name: "a dropped email is not used",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s4", Email: "token-user", Name: "Token Owner"},
			want: "token-owner",
		},
		{
			name: "a preferred_username holding NUL is not used",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s5", PreferredUsername: new("ev\x00il"), Email: "mallory@example.com"},
			want: "mallory",
		},
		{
			name: "a long preferred_username is cut to 32 characters",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "s6", PreferredUsername: new(strings.Repeat("Q", 300))},
			want: strings.Repeat("q", 32),
		},
		{
			name: "a login with no claims gets user- and the subject's digest",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "auth0|bare"},
			want: subjectUsername("auth0|bare"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := e.createUser(t, tc.req)
			if u.GetUsername() != tc.want {
				t.Errorf("username = %q, want %q", u.GetUsername(), tc.want)
			}
			var stored string
			if err := e.conn.QueryRow(t.Context(), "SELECT username FROM users WHERE oidc_subject = $1", tc.req.GetOidcSubject()).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if stored != tc.want {
				t.Errorf("stored username = %q, want %q", stored, tc.want)
			}
		})
	}
}

func TestLoginUsernameCollisionsTakeNumberedSuffixes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	preferred := "Bob"
	var got []string
	for i := range 4 {
		u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: fmt.Sprintf("bob-%d", i), PreferredUsername: &preferred})
		got = append(got, u.GetUsername())
	}
	want := []string{"bob", "bob-2", "bob-3", "bob-4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usernames (-want +got):\n%s", diff)
	}

	// A returning login keeps its username: derivation is for new users.
	resp, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "bob-1", PreferredUsername: &preferred})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCreated() || resp.GetUser().GetUsername() != "bob-2" {
		t.Errorf("returning login: created = %t, username = %q; want false, %q", resp.GetCreated(), resp.GetUser().GetUsername(), "bob-2")
	}
}

func TestLoginUsernameSuffixFitsA32CharacterBase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := strings.Repeat("a", 32)
	// base-2 to base-9 are taken already, so that the next suffix has two
	// digits and cuts the base one character more.
	seedUsernames(t, e, base)
	for n := 2; n <= 9; n++ {
		seedUsernames(t, e, base[:30]+fmt.Sprintf("-%d", n))
	}
	got := []string{
		e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "long-1", PreferredUsername: &base}).GetUsername(),
		e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "long-2", PreferredUsername: &base}).GetUsername(),
	}
	want := []string{base[:29] + "-10", base[:29] + "-11"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usernames (-want +got):\n%s", diff)
	}
}

func TestLoginUsernameAfterSuffix99IsRandom(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		base string
		want *regexp.Regexp
	}{
		{"a short base gets a 4-hex-digit suffix", "carol", regexp.MustCompile(`^carol-[0-9a-f]{4}$`)},
		{"a 32-character base is cut to fit the 4-hex-digit suffix", strings.Repeat("d", 32), regexp.MustCompile(`^d{27}-[0-9a-f]{4}$`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			taken := []string{tc.base}
			for n := 2; n <= 99; n++ {
				suffix := fmt.Sprintf("-%d", n)
				taken = append(taken, tc.base[:min(len(tc.base), 32-len(suffix))]+suffix)
			}
			seedUsernames(t, e, taken...)

			seen := map[string]bool{}
			for _, name := range taken {
				seen[name] = true
			}
			for i := range 3 {
				u := e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: fmt.Sprintf("late-%d", i), PreferredUsername: &tc.base})
				if !tc.want.MatchString(u.GetUsername()) {
					t.Errorf("username = %q, want a match of %s", u.GetUsername(), tc.want)
				}
				if seen[u.GetUsername()] {
					t.Errorf("username %q was taken already", u.GetUsername())
				}
				seen[u.GetUsername()] = true
			}
		})
	}
}

// A burst of new users wanting the same name all get in: each loser of a
// username race tries again and takes the next free suffix, and none of
// them sees an error.
func TestConcurrentFirstLoginsWithOnePreferredUsername(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const logins = 64
	preferred := "Same"
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  []string
		errs []error
	)
	start := make(chan struct{})
	for i := range logins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{
				OidcSubject:       fmt.Sprintf("burst-%d", i),
				PreferredUsername: &preferred,
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("login %d: %w", i, err))
			case !resp.GetCreated():
				errs = append(errs, fmt.Errorf("login %d: created = false, want true", i))
			default:
				got = append(got, resp.GetUser().GetUsername())
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}

	// Every name taken was the first free one when it was taken, so the
	// burst fills same, same-2 ... same-64 without a gap.
	want := []string{"same"}
	for n := 2; n <= logins; n++ {
		want = append(want, fmt.Sprintf("same-%d", n))
	}
	sort.Strings(want)
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usernames (-want +got):\n%s", diff)
	}
	if n := e.countUsers(t); n != logins {
		t.Errorf("users rows = %d, want %d", n, logins)
	}
}

// seedUsernames inserts users holding the given usernames straight into the
// table, each with a subject of its own: faster than a login per name, for
// tests that need names taken before they start.
func seedUsernames(t *testing.T, e *env, usernames ...string) {
	t.Helper()
	_, err := e.conn.Exec(t.Context(), `
		INSERT INTO users (identity_id, oidc_subject, username)
		SELECT gen_random_uuid(), 'seed|' || u, u FROM unnest($1::text[]) u`, usernames)
	if err != nil {
		t.Fatalf("seed usernames: %v", err)
	}
}
