package db_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/testing/certs"
	"github.com/agynio/users/internal/testing/pgtest"
	"github.com/agynio/users/internal/testing/testdb"
)

// tlsServer is a PostgreSQL server that takes connections over TLS only,
// with a certificate for localhost from a CA of its own, and the files a
// client verifies it with.
type tlsServer struct {
	port string
	// ca holds the server's CA; otherCA one that issued nothing the
	// server has.
	ca, otherCA string
}

func startTLSServer(t *testing.T) tlsServer {
	t.Helper()
	srv := pgtest.LocalTLS(t)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := tlsServer{port: u.Port(), ca: filepath.Join(dir, "ca.crt"), otherCA: filepath.Join(dir, "other-ca.crt")}
	certs.WriteFile(t, s.ca, srv.CA)
	certs.WriteFile(t, s.otherCA, certs.NewCA(t, "a CA the server does not use").PEM)
	return s
}

// url is a URL for the server by host name, with the query settings
// given as pairs of key and value ("" leaves the key out).
func (s tlsServer) url(host string, settings ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(settings); i += 2 {
		if settings[i+1] != "" {
			q.Set(settings[i], settings[i+1])
		}
	}
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort(host, s.port), Path: "/postgres", RawQuery: q.Encode()}
	return u.String()
}

// The host names the TLS tests connect by: one the server's certificate
// carries, and one it does not.
const namedHost, unnamedHost = "localhost", "users-db.elsewhere.svc"

// connectAsTheService connects to dbURL the way the service does (pgx's
// parsing of the URL, then ConfigureConn), with namedHost and unnamedHost
// resolving to 127.0.0.1, where the TLS server listens. It returns
// whether the server sees the session over TLS.
func connectAsTheService(t *testing.T, dbURL string) (overTLS bool, err error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return false, err
	}
	db.ConfigureConn(cfg)
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) {
		if host == namedHost || host == unnamedHost {
			return []string{"127.0.0.1"}, nil
		}
		return net.DefaultResolver.LookupHost(ctx, host)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	err = conn.QueryRow(t.Context(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&overTLS)
	return overTLS, err
}

// refusal names why a connection was refused, for comparing with what a
// case expects: a certificate for other names, one from a CA that is not
// trusted, or the server's refusal of a session without TLS.
func refusal(err error) string {
	var hostname x509.HostnameError
	var authority x509.UnknownAuthorityError
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &hostname):
		return "certificate for other names"
	case errors.As(err, &authority):
		return "certificate from an untrusted CA"
	case errors.As(err, &pgErr) && pgErr.Code == pgerrcode.InvalidAuthorizationSpecification:
		return "no TLS, refused by the server"
	default:
		return fmt.Sprintf("unexpected: %v", err)
	}
}

// TestSSLModes holds the service to what README says each sslmode of
// DATABASE_URL does, against a server that takes TLS only and whose
// certificate names localhost: pgx's modes, as libpq's, with one
// difference (sslrootcert under prefer).
func TestSSLModes(t *testing.T) {
	t.Parallel()
	srv := startTLSServer(t)
	for _, tc := range []struct {
		name    string
		url     string
		refusal string // "" connects over TLS
	}{
		{
			name: "verify-full with the CA connects to a name the certificate carries",
			url:  srv.url(namedHost, "sslmode", "verify-full", "sslrootcert", srv.ca),
		},
		{
			name:    "verify-full refuses a host name the certificate does not carry",
			url:     srv.url(unnamedHost, "sslmode", "verify-full", "sslrootcert", srv.ca),
			refusal: "certificate for other names",
		},
		{
			name:    "verify-full without the CA refuses the certificate: the system's CAs did not issue it",
			url:     srv.url(namedHost, "sslmode", "verify-full"),
			refusal: "certificate from an untrusted CA",
		},
		{
			name:    "verify-full with another CA refuses the certificate",
			url:     srv.url(namedHost, "sslmode", "verify-full", "sslrootcert", srv.otherCA),
			refusal: "certificate from an untrusted CA",
		},
		{
			name: "verify-ca checks the CA alone, whatever the host name",
			url:  srv.url(unnamedHost, "sslmode", "verify-ca", "sslrootcert", srv.ca),
		},
		{
			name:    "verify-ca with another CA refuses the certificate",
			url:     srv.url(unnamedHost, "sslmode", "verify-ca", "sslrootcert", srv.otherCA),
			refusal: "certificate from an untrusted CA",
		},
		{
			name: "require without a CA takes a certificate nobody trusts, for any name",
			url:  srv.url(unnamedHost, "sslmode", "require"),
		},
		{
			name:    "require with a CA checks it, as verify-ca does",
			url:     srv.url(namedHost, "sslmode", "require", "sslrootcert", srv.otherCA),
			refusal: "certificate from an untrusted CA",
		},
		{
			name: "unset (prefer) takes a certificate nobody trusts, even with a CA given",
			url:  srv.url(unnamedHost, "sslrootcert", srv.otherCA),
		},
		{
			name: "allow takes TLS when the server insists, verifying nothing",
			url:  srv.url(unnamedHost, "sslmode", "allow", "sslrootcert", srv.otherCA),
		},
		{
			name:    "disable never uses TLS, so a server that requires it refuses",
			url:     srv.url(namedHost, "sslmode", "disable"),
			refusal: "no TLS, refused by the server",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			overTLS, err := connectAsTheService(t, tc.url)
			if got := refusal(err); got != tc.refusal {
				t.Fatalf("connect to %s: %q (%v), want %q", tc.url, got, err, tc.refusal)
			}
			if err == nil && !overTLS {
				t.Errorf("connected to %s without TLS", tc.url)
			}
		})
	}
}

// TestSSLModesWithoutTLSOnTheServer: prefer, the default, falls back to
// plaintext when the server has no TLS; require does not.
func TestSSLModesWithoutTLSOnTheServer(t *testing.T) {
	t.Parallel()
	plain := testdb.URL(t)
	var ssl string
	conn, err := pgx.Connect(t.Context(), plain)
	if err != nil {
		t.Fatal(err)
	}
	err = conn.QueryRow(t.Context(), "SHOW ssl").Scan(&ssl)
	conn.Close(context.WithoutCancel(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if ssl != "off" {
		t.Skipf("the test database server has ssl = %s; this test needs one without TLS", ssl)
	}

	overTLS, err := connectAsTheService(t, testdb.WithQuery(t, plain, "sslmode", ""))
	if err != nil || overTLS {
		t.Errorf("unset (prefer): overTLS %v, error %v; want a plaintext session", overTLS, err)
	}
	if _, err := connectAsTheService(t, testdb.WithQuery(t, plain, "sslmode", "require")); err == nil {
		t.Errorf("require connected to a server without TLS")
	}
}

// TestSSLSettingsFromTheEnvironment: PGSSLMODE and PGSSLROOTCERT, which
// the chart sets from database.tls.caSecret, apply to a URL that says
// nothing of TLS (such as CloudNativePG's uri), and a URL's own sslmode
// and sslrootcert win over them. Not parallel: it sets the environment.
func TestSSLSettingsFromTheEnvironment(t *testing.T) {
	srv := startTLSServer(t)
	for _, tc := range []struct {
		name     string
		mode, ca string // PGSSLMODE, PGSSLROOTCERT
		url      string
		refusal  string
	}{
		{
			name: "verify-full with the CA, from the environment",
			mode: "verify-full", ca: srv.ca,
			url: srv.url(namedHost),
		},
		{
			name: "verify-full from the environment refuses a host name the certificate does not carry",
			mode: "verify-full", ca: srv.ca,
			url:     srv.url(unnamedHost),
			refusal: "certificate for other names",
		},
		{
			name: "verify-full from the environment refuses a certificate from another CA",
			mode: "verify-full", ca: srv.otherCA,
			url:     srv.url(namedHost),
			refusal: "certificate from an untrusted CA",
		},
		{
			name: "the URL's sslrootcert wins over PGSSLROOTCERT",
			mode: "verify-full", ca: srv.otherCA,
			url: srv.url(namedHost, "sslrootcert", srv.ca),
		},
		{
			name: "the URL's sslmode wins over PGSSLMODE",
			mode: "verify-full", ca: srv.otherCA,
			url: srv.url(unnamedHost, "sslmode", "verify-ca", "sslrootcert", srv.ca),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PGSSLMODE", tc.mode)
			t.Setenv("PGSSLROOTCERT", tc.ca)
			overTLS, err := connectAsTheService(t, tc.url)
			if got := refusal(err); got != tc.refusal {
				t.Fatalf("connect to %s with PGSSLMODE=%s PGSSLROOTCERT=%s: %q (%v), want %q", tc.url, tc.mode, tc.ca, got, err, tc.refusal)
			}
			if err == nil && !overTLS {
				t.Errorf("connected to %s without TLS", tc.url)
			}
		})
	}
}
