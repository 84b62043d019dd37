package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/certs"
	"github.com/agynio/users/internal/testing/pgtest"
)

// TestDatabaseVerifiedFromTheEnvironment runs the binary as the chart runs
// it with database.tls.caSecret: a DATABASE_URL that says nothing of TLS,
// as CloudNativePG's uri does, with PGSSLMODE=verify-full and
// PGSSLROOTCERT naming the mounted CA, against a server that takes TLS
// connections only, by a name its certificate carries. migrate up
// applies the migrations (dbmate's connection included) and serve is
// ready and serves; then, with another CA, migrate up fails and serve,
// on the same migrated database, is not ready and logs why.
func TestDatabaseVerifiedFromTheEnvironment(t *testing.T) {
	t.Parallel()
	srv := pgtest.LocalTLS(t)
	admin, err := pgx.Connect(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.Exec(t.Context(), "CREATE DATABASE users")
	admin.Close(context.WithoutCancel(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, otherCA := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "other-ca.crt")
	certs.WriteFile(t, ca, srv.CA)
	certs.WriteFile(t, otherCA, certs.NewCA(t, "a CA the server does not use").PEM)
	env := func(rootCert string) map[string]string {
		return map[string]string{
			"DATABASE_URL":  fmt.Sprintf("postgresql://postgres@localhost:%s/users", u.Port()),
			"PGSSLMODE":     "verify-full",
			"PGSSLROOTCERT": rootCert,
		}
	}

	t.Run("with the server's CA, migrate up migrates and serve serves", func(t *testing.T) {
		res := runUsers(t, env(ca), "migrate", "up")
		if res.code != 0 || !strings.Contains(res.stdout, "Applying") {
			t.Fatalf("migrate up: exit code %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
		}
		p, addr := startServe(t, env(ca))
		waitForStatus(t, p, "/readyz", http.StatusOK)
		createUser(t, usersv1.NewUsersServiceClient(dial(t, addr)), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "verified|alice"})
	})

	t.Run("then with another CA, migrate up fails and serve is not ready", func(t *testing.T) {
		res := runUsers(t, env(otherCA), "migrate", "up")
		if res.code != 1 || !strings.Contains(res.stderr, "certificate signed by unknown authority") {
			t.Errorf("migrate up: exit code %d, stderr:\n%s\nwant 1 and the certificate's refusal", res.code, res.stderr)
		}
		p, _ := startServe(t, env(otherCA))
		if code, body := adminGet(t, p, "/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz: %d %q, want 503", code, body)
		}
		if !strings.Contains(p.stdout.String(), "certificate signed by unknown authority") {
			t.Errorf("serve's log does not say the certificate was refused:\n%s", p.stdout)
		}
	})

	// The migrations run through dbmate's driver, lib/pq, which reads
	// PGSSLMODE itself and refuses prefer and allow there.
	t.Run("PGSSLMODE=prefer in the environment stops migrate up", func(t *testing.T) {
		e := env(ca)
		e["PGSSLMODE"] = "prefer"
		res := runUsers(t, e, "migrate", "up")
		if res.code != 1 || !strings.Contains(res.stderr, `$PGSSLMODE: "prefer" is not supported`) {
			t.Errorf("migrate up: exit code %d, stderr:\n%s\nwant 1 and lib/pq's refusal of prefer", res.code, res.stderr)
		}
	})
	// lib/pq also reads PGSSLROOTCERT itself; the URL's sslrootcert must
	// still win, as it does for serve. A fresh database, so that dbmate's
	// connection applies migrations rather than finding none to apply.
	t.Run("the URL's sslrootcert wins over PGSSLROOTCERT, for migrate up as for serve", func(t *testing.T) {
		admin, err := pgx.Connect(t.Context(), srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, err = admin.Exec(t.Context(), "CREATE DATABASE users_url_ca")
		admin.Close(context.WithoutCancel(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
		e := env(otherCA)
		e["DATABASE_URL"] = fmt.Sprintf("postgresql://postgres@localhost:%s/users_url_ca?sslrootcert=%s", u.Port(), url.QueryEscape(ca))
		res := runUsers(t, e, "migrate", "up")
		if res.code != 0 || !strings.Contains(res.stdout, "Applying") {
			t.Fatalf("migrate up: exit code %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
		}
		p, _ := startServe(t, e)
		waitForStatus(t, p, "/readyz", http.StatusOK)
	})
}
