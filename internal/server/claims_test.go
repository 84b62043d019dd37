package server_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/testing/protocmp"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/identity"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// The identity provider wrote the claims, not the caller, and a refused
// login locks a person out: a malformed optional claim is stored empty,
// an overlong name cut, and the login goes through.
func TestLoginStoresOnlyWellFormedClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	longName := strings.Repeat("é", 300) // 600 bytes
	for _, tc := range []struct {
		name string
		req  *usersv1.ResolveOrCreateUserRequest
		want *usersv1.User
	}{
		{
			name: "an email that is no address is stored empty",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c1", Email: "token-user", Name: "Token"},
			want: &usersv1.User{OidcSubject: "c1", Name: "Token", Username: "token"},
		},
		{
			name: "an email with a display name is stored empty",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c2", Email: "Dee <dee@example.com>", Name: "Dee"},
			want: &usersv1.User{OidcSubject: "c2", Name: "Dee", Username: "dee"},
		},
		{
			name: "an email over 254 characters is stored empty",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c3", Email: strings.Repeat("e", 250) + "@x.com", Name: "Eve"},
			want: &usersv1.User{OidcSubject: "c3", Name: "Eve", Username: "eve"},
		},
		{
			name: "a photo_url that is no http URL is stored empty",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c4", PhotoUrl: "javascript:alert(1)", Email: "fay@example.com"},
			want: &usersv1.User{OidcSubject: "c4", Email: "fay@example.com", Username: "fay"},
		},
		{
			name: "a relative photo_url is stored empty",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c5", PhotoUrl: "/avatars/gus.png", Email: "gus@example.com"},
			want: &usersv1.User{OidcSubject: "c5", Email: "gus@example.com", Username: "gus"},
		},
		{
			name: "a name over 256 characters is cut to 256 at a character boundary",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c6", Name: longName, Email: "hal@example.com"},
			want: &usersv1.User{OidcSubject: "c6", Name: strings.Repeat("é", 256), Email: "hal@example.com", Username: "hal"},
		},
		{
			name: "a name holding NUL is stored empty",
			req:  &usersv1.ResolveOrCreateUserRequest{OidcSubject: "c7", Name: "I\x00vy", Email: "ivy@example.com"},
			want: &usersv1.User{OidcSubject: "c7", Email: "ivy@example.com", Username: "ivy"},
		},
		{
			name: "every optional claim malformed at once still logs in",
			req: &usersv1.ResolveOrCreateUserRequest{
				OidcSubject: "c8", Name: "J\x00o", Email: "jo at example", PhotoUrl: "ftp://example.com/jo.png",
				PreferredUsername: new("j\x00o"),
			},
			want: &usersv1.User{OidcSubject: "c8", Username: subjectUsername("c8")},
		},
		{
			name: "well-formed claims are stored as they are",
			req: &usersv1.ResolveOrCreateUserRequest{
				OidcSubject: "c9", Name: "Kim", Email: "kim@example.com", PhotoUrl: "https://example.com/kim.png",
			},
			want: &usersv1.User{OidcSubject: "c9", Name: "Kim", Email: "kim@example.com", PhotoUrl: "https://example.com/kim.png", Username: "kim"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := e.createUser(t, tc.req)
			if diff := cmp.Diff(tc.want, got, protocmp.Transform(), ignoreMeta); diff != "" {
				t.Errorf("user (-want +got):\n%s", diff)
			}
			// What was answered is what was stored.
			var stored usersv1.User
			err := e.conn.QueryRow(t.Context(),
				"SELECT oidc_subject, name, email, photo_url, username FROM users WHERE oidc_subject = $1", tc.req.GetOidcSubject(),
			).Scan(&stored.OidcSubject, &stored.Name, &stored.Email, &stored.PhotoUrl, &stored.Username)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, &stored, protocmp.Transform(), ignoreMeta); diff != "" {
				t.Errorf("stored user (-want +got):\n%s", diff)
			}
			if !utf8.ValidString(stored.Name) {
				t.Errorf("stored name %q is not valid UTF-8", stored.Name)
			}
		})
	}
}

func TestLoginStoresEmailVerified(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name     string
		verified bool
	}{
		{"a verified email is stored as verified", true},
		{"an unverified email is stored as unverified", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			subject := "verified-" + tc.name
			e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: subject, Email: "v@example.com", EmailVerified: tc.verified})
			var got bool
			if err := e.conn.QueryRow(t.Context(), "SELECT email_verified FROM users WHERE oidc_subject = $1", subject).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.verified {
				t.Errorf("email_verified = %t, want %t", got, tc.verified)
			}
		})
	}

	// Claims are first-login claims: a later login does not change it.
	e.createUser(t, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "later", EmailVerified: false})
	if _, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "later", EmailVerified: true}); err != nil {
		t.Fatal(err)
	}
	var got bool
	if err := e.conn.QueryRow(t.Context(), "SELECT email_verified FROM users WHERE oidc_subject = 'later'").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got {
		t.Error("a returning login set email_verified; want it left as the first login stored it")
	}
}

// Lenient as the claims are, the subject is the login's key and is still
// refused when malformed, and a malformed claim beside it is not named.
func TestLoginStillValidatesTheSubject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name    string
		subject string
	}{
		{"an empty subject is refused", ""},
		{"a subject over 255 characters is refused", strings.Repeat("s", 256)},
		{"a subject holding NUL is refused", "auth0|\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.client.ResolveOrCreateUser(t.Context(), &usersv1.ResolveOrCreateUserRequest{
				OidcSubject: tc.subject, Email: "token-user", PhotoUrl: "nope",
			})
			wantViolations(t, err, "oidc_subject")
		})
	}
	if n := e.countUsers(t); n != 0 {
		t.Errorf("users rows = %d, want 0", n)
	}
}

// An operator sees an identity provider that sends malformed claims: a
// counter by claim, and a log line naming the claims, never their values,
// which may be personal data.
func TestLoginCountsAndLogsDroppedClaims(t *testing.T) {
	t.Parallel()
	conn := testdb.New(t)
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_total"}, []string{"claim"})
	e := newEnvFor(t, conn, func(log *slog.Logger) *server.Server {
		return server.New(conn, identity.Local{}, log, server.WithDroppedClaimsCounter(counter))
	})

	// Values that appear nowhere else, so that finding one in the logs
	// can only mean it was logged.
	const (
		badEmail     = "secret-email-7f3a9c"
		badPhoto     = "secret-photo-51be20"
		nulName      = "secret-name-\x00-c41d"
		nulPreferred = "secret-preferred-\x00-e08b"
		longNameUnit = "secret-long-name-0d6e|"
	)
	longName := strings.Repeat(longNameUnit, 20) // 440 characters
	logins := []*usersv1.ResolveOrCreateUserRequest{
		{OidcSubject: "d1", Email: badEmail, PhotoUrl: badPhoto, Name: longName},
		{OidcSubject: "d2", Email: badEmail, Name: nulName},
		{OidcSubject: "d3", PreferredUsername: new(nulPreferred)},
		{OidcSubject: "d4", Name: "Clean", Email: "clean@example.com"}, // drops nothing
	}
	for _, req := range logins {
		e.createUser(t, req)
	}

	wantCounts := map[string]float64{
		"email":              2,
		"photo_url":          1,
		"name":               2, // one cut, one holding NUL
		"preferred_username": 1,
	}
	if diff := cmp.Diff(wantCounts, counterValues(t, counter, "claim")); diff != "" {
		t.Errorf("dropped claims counted (-want +got):\n%s", diff)
	}

	logs := e.logs.String()
	var got []string
	for line := range strings.Lines(logs) {
		var entry struct {
			Msg     string `json:"msg"`
			Level   string `json:"level"`
			Dropped string `json:"dropped_claims"`
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if entry.Msg == "login claims dropped" {
			if entry.Level != "INFO" {
				t.Errorf("level = %s, want INFO", entry.Level)
			}
			got = append(got, entry.Dropped)
		}
	}
	want := []string{"name,email,photo_url", "name,email", "preferred_username"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dropped_claims of the log lines (-want +got):\n%s", diff)
	}
	for _, secret := range []string{badEmail, badPhoto, "secret-name-", "secret-preferred-", "secret-long-name-"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold the value %q:\n%s", secret, logs)
		}
	}
}

// counterValues reads every counter of c, by the value of its label.
func counterValues(t *testing.T, c *prometheus.CounterVec, label string) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	got := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == label {
				got[l.GetValue()] += d.GetCounter().GetValue()
			}
		}
	}
	return got
}
