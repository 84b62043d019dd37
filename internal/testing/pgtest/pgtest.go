// Package pgtest starts a throwaway PostgreSQL server, for tests and for
// "make run" on a machine without a database: in a Docker container when a
// Docker engine answers, else from the local PostgreSQL server binaries in a
// temporary directory. Close removes every trace of it.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// BackendEnv forces a backend: "docker" or "local". Empty means: Docker if
// an engine answers, else local binaries.
const BackendEnv = "PGTEST_BACKEND"

// Server is a running throwaway PostgreSQL server.
type Server struct {
	// URL connects as a superuser to the "postgres" database.
	URL string
	// Backend says which kind of server this is: "docker" or "local".
	Backend string
	// Where says where it lives: the local server's directory, or the
	// container's ID.
	Where string
	// CA is the PEM certificate of the CA that issued the server's TLS
	// certificate, for a server from StartLocalTLS; nil otherwise.
	CA []byte

	stop func() error
}

// Describe names the server for a person: its backend and where it lives.
func (s *Server) Describe() string { return s.Backend + ", " + s.Where }

// Close stops the server and deletes its data.
func (s *Server) Close() error { return s.stop() }

// Start starts a server with the backend chosen by PGTEST_BACKEND, or the
// first that works. Progress notes go to log. Each of settings is a server
// setting as name=value, applied after (so in place of) pgtest's own
// defaults: for a caller that needs the server sized or made durable.
func Start(ctx context.Context, log io.Writer, settings ...string) (*Server, error) {
	switch b := os.Getenv(BackendEnv); b {
	case "docker":
		return StartDocker(ctx, settings...)
	case "local":
		return StartLocal(ctx, settings...)
	case "":
	default:
		return nil, fmt.Errorf("%s=%q: want docker, local or empty", BackendEnv, b)
	}

	srv, dockerErr := StartDocker(ctx, settings...)
	if dockerErr == nil {
		return srv, nil
	}
	fmt.Fprintf(log, "pgtest: no Docker engine (%v); using local PostgreSQL binaries\n", dockerErr)
	srv, localErr := StartLocal(ctx, settings...)
	if localErr == nil {
		return srv, nil
	}
	return nil, fmt.Errorf("no PostgreSQL for tests: set TEST_DATABASE_URL, start a Docker engine, "+
		"or install the PostgreSQL server binaries (Debian: apt-get install postgresql): %w",
		errors.Join(dockerErr, localErr))
}

// serverArgs returns postgres command-line arguments: pgtest's defaults,
// then settings. postgres applies -c options in order, so a later one wins.
func serverArgs(settings []string) []string {
	args := []string{
		"-c", "max_connections=300",
		// Throwaway data: durability buys nothing and costs time.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
	}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	return args
}

// waitReady polls until url accepts connections, done reports the server
// gone, or the deadline passes.
func waitReady(ctx context.Context, url string, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var lastErr error
	for {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err
		select {
		case <-done:
			return errors.New("server exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w", lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
