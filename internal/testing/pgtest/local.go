package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartLocal runs initdb and postgres from the local server binaries in a
// fresh temporary directory, listening on a free loopback port. settings
// are as for Start.
func StartLocal(ctx context.Context, settings ...string) (*Server, error) {
	return startLocal(ctx, false, settings)
}

// StartLocalTLS is StartLocal for a server that takes TCP connections over
// TLS only, with a certificate for localhost, 127.0.0.1 and ::1 from a CA
// of its own (Server.CA): for testing clients' TLS paths. Its URL says
// sslmode=require.
func StartLocalTLS(ctx context.Context) (*Server, error) {
	return startLocal(ctx, true, nil)
}

// LocalTLS starts a StartLocalTLS server for test t and stops it when t
// ends. Without the local binaries it skips, unless the local backend was
// asked for (as CI asks), where it fails.
func LocalTLS(t testing.TB) *Server {
	t.Helper()
	if _, err := FindBinaries(); err != nil && os.Getenv(BackendEnv) != "local" {
		t.Skipf("needs the local PostgreSQL binaries: %v", err)
	}
	srv, err := StartLocalTLS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func startLocal(ctx context.Context, withTLS bool, settings []string) (*Server, error) {
	bindir, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	// initdb and postgres refuse to run as root; run them as the postgres
	// OS user instead (CI runs as root).
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "users-pgtest-")
	if err != nil {
		return nil, err
	}
	cleanupDir := func() { os.RemoveAll(dir) }
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			cleanupDir()
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")

	initdb := exec.CommandContext(ctx, filepath.Join(bindir, "initdb"),
		"--pgdata", data, "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		cleanupDir()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var caPEM []byte
	if withTLS {
		if caPEM, err = requireTLS(data, cred); err != nil {
			cleanupDir()
			return nil, err
		}
	}

	// A free port can be taken by someone else between our probe and the
	// server's bind: try a few.
	var lastErr error
	for range 3 {
		srv, err := startPostgres(ctx, bindir, dir, data, cred, withTLS, settings)
		if err == nil {
			srv.CA = caPEM
			return srv, nil
		}
		lastErr = err
	}
	cleanupDir()
	return nil, lastErr
}

func startPostgres(ctx context.Context, bindir, dir, data string, cred *syscall.Credential, withTLS bool, settings []string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	// Not CommandContext: the server must outlive the start-up context.
	cmd := exec.Command(filepath.Join(bindir, "postgres"), append([]string{
		"-D", data,
		"-p", strconv.Itoa(port),
		"-k", dir, // Unix socket in our directory, not the system's
		"-c", "listen_addresses=127.0.0.1",
	}, serverArgs(settings)...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		// Own process group: a Ctrl-C in the terminal reaches our process,
		// which then stops the server in order, instead of the server dying
		// under a still-running service.
		Setpgid: true,
		// If our process dies without Close, the server does not linger.
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() //nolint:errcheck // exit status is read from the log

	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	if withTLS {
		url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=require", port)
	}
	if err := waitReady(ctx, url, done); err != nil {
		cmd.Process.Kill() //nolint:errcheck // best effort on a failed start
		<-done
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("postgres on port %d: %w\n%s", port, err, log)
	}

	stop := func() error {
		// SIGINT is PostgreSQL's "fast shutdown": abort sessions, exit cleanly.
		cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // it may have exited already
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill() //nolint:errcheck // last resort
			<-done
		}
		return os.RemoveAll(dir)
	}
	return &Server{URL: url, Backend: "local", Where: dir, stop: stop}, nil
}

// FindBinaries returns the directory holding initdb and postgres: from PATH,
// else from pg_config --bindir, else the newest /usr/lib/postgresql/*/bin.
func FindBinaries() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH, via pg_config, or under /usr/lib/postgresql/*/bin")
}

func versionOf(bindir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return v
}

// serverCredential returns nil when we may run the server as ourselves, or
// the postgres OS user's credential when we are root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses root: need an unprivileged 'postgres' OS user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
