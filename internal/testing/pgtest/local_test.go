package pgtest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/testing/pgtest"
)

// needLocalBinaries skips a test of the local-binaries backend on a
// machine that has none, and so uses Docker; PGTEST_BACKEND=local makes it
// fail there instead.
func needLocalBinaries(t *testing.T) {
	t.Helper()
	if _, err := pgtest.FindBinaries(); err != nil && os.Getenv(pgtest.BackendEnv) != "local" {
		t.Skipf("local backend not testable here: %v", err)
	}
}

func TestFindBinaries(t *testing.T) {
	t.Parallel()
	needLocalBinaries(t)
	dir, err := pgtest.FindBinaries()
	if err != nil {
		t.Fatalf("FindBinaries: %v", err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("FindBinaries() = %q, which lacks %s: %v", dir, name, err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("FindBinaries() = %q, whose %s is not an executable file (mode %v)", dir, name, fi.Mode())
		}
	}
}

// TestStartLocal runs the local-binaries backend for real: it must work on
// every machine the tests run on, including as root in CI.
func TestStartLocal(t *testing.T) {
	t.Parallel()
	needLocalBinaries(t)
	ctx := t.Context()

	srv, err := pgtest.StartLocal(ctx)
	if err != nil {
		t.Fatalf("StartLocal: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			srv.Close() //nolint:errcheck // safety net after a failed assertion
		}
	})
	if srv.Backend != "local" {
		t.Errorf("Backend = %q, want %q", srv.Backend, "local")
	}

	dir := serve(t, srv.URL)
	if !strings.HasPrefix(filepath.Base(dir), "users-pgtest-") {
		t.Errorf("data directory %q is not inside a users-pgtest-* temporary directory", dir)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("temporary directory while running: %v", err)
	}

	closed = true
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	connectCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(connectCtx, srv.URL); err == nil {
		conn.Close(ctx) //nolint:errcheck // the test has failed already
		t.Errorf("server still accepts connections at %s after Close", srv.URL)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s after Close: Stat error = %v, want it gone", dir, err)
	}
}

// serve checks that the server at url answers a query and returns the
// temporary directory that holds its data.
func serve(t *testing.T, url string) (dir string) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}
	if one != 1 {
		t.Errorf("SELECT 1 = %d", one)
	}
	var data string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&data); err != nil {
		t.Fatalf("SHOW data_directory: %v", err)
	}
	return filepath.Dir(data)
}
