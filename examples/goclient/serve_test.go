package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/certs"
	"github.com/agynio/users/internal/testing/syncbuf"
	"github.com/agynio/users/internal/testing/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Run(m)) }

// waitTimeout bounds every wait on a process, so that a broken binary
// fails the test instead of hanging it.
const waitTimeout = 60 * time.Second

// TestExampleAgainstServe builds the example and the service, serves a
// database of its own over mutual TLS, and runs the example as a person
// would: it logs a user in and prints it, and a second run of the same
// subject finds the same user, no longer created.
func TestExampleAgainstServe(t *testing.T) {
	t.Parallel()
	bin := buildBinaries(t)
	ca := certs.NewCA(t, "ca")
	server, client := ca.Server(t, "users"), ca.Client(t, "goclient")
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"ca.crt": ca.PEM, "tls.crt": server.CertPEM, "tls.key": server.KeyPEM,
		"client.crt": client.CertPEM, "client.key": client.KeyPEM,
	} {
		certs.WriteFile(t, filepath.Join(dir, name), data)
	}
	addr := startServe(t, filepath.Join(bin, "users"), map[string]string{
		"DATABASE_URL":            testdb.URL(t),
		"GRPC_ADDRESS":            "127.0.0.1:0",
		"ADMIN_ADDRESS":           "127.0.0.1:0",
		"GRPC_TLS_CERT_FILE":      filepath.Join(dir, "tls.crt"),
		"GRPC_TLS_KEY_FILE":       filepath.Join(dir, "tls.key"),
		"GRPC_TLS_CLIENT_CA_FILE": filepath.Join(dir, "ca.crt"),
	})
	example := func(args ...string) (stdout, stderr string, err error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "goclient"), append([]string{"-addr", addr,
			"-ca", filepath.Join(dir, "ca.crt"), "-cert", filepath.Join(dir, "client.crt"), "-key", filepath.Join(dir, "client.key")},
			args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return out.String(), errOut.String(), err
	}

	var firstID string
	for i, wantCreated := range []bool{true, false} {
		stdout, stderr, err := example("-subject", "example|dave", "-name", "Dave")
		if err != nil {
			t.Fatalf("run %d of the example: %v\nstderr:\n%s", i+1, err, stderr)
		}
		id, created, user := parseOutput(t, stdout)
		if created != wantCreated {
			t.Errorf("run %d: created %t, want %t", i+1, created, wantCreated)
		}
		if user.GetMeta().GetId() != id || user.GetOidcSubject() != "example|dave" || user.GetName() != "Dave" {
			t.Errorf("run %d: GetUser printed %v; want the user %s, example|dave, named Dave", i+1, user, id)
		}
		if i == 0 {
			firstID = id
		} else if id != firstID {
			t.Errorf("run %d: identity id %s, want the first run's %s", i+1, id, firstID)
		}
	}

	// A client whose certificate the server's CA did not issue is refused
	// at the handshake: the call waits for a ready replica until its
	// deadline and fails then, with the latest connection error.
	stranger := certs.NewCA(t, "stranger").Client(t, "stranger")
	certs.WriteFile(t, filepath.Join(dir, "stranger.crt"), stranger.CertPEM)
	certs.WriteFile(t, filepath.Join(dir, "stranger.key"), stranger.KeyPEM)
	_, stderr, err := example("-cert", filepath.Join(dir, "stranger.crt"), "-key", filepath.Join(dir, "stranger.key"), "-timeout", "1s")
	if err == nil || !strings.Contains(stderr, "code = DeadlineExceeded") {
		t.Errorf("the example with another CA's certificate: %v, stderr %q; want it to fail at its deadline", err, stderr)
	}
}

var loginLine = regexp.MustCompile(`^ResolveOrCreateUser: identity_id (\S+), created (true|false)$`)

// parseOutput reads what the example printed: the login's identity id and
// created flag, then the user as GetUser returned it, in protojson.
func parseOutput(t *testing.T, stdout string) (id string, created bool, user *usersv1.User) {
	t.Helper()
	first, rest, _ := strings.Cut(stdout, "\n")
	m := loginLine.FindStringSubmatch(first)
	body, ok := strings.CutPrefix(rest, "GetUser:\n")
	if m == nil || !ok {
		t.Fatalf("the example printed:\n%s\nwant a ResolveOrCreateUser line, then GetUser: and the user", stdout)
	}
	user = &usersv1.User{}
	if err := protojson.Unmarshal([]byte(body), user); err != nil {
		t.Fatalf("GetUser's user: %v in\n%s", err, body)
	}
	return m[1], m[2] == "true", user
}

// buildBinaries builds the service and the example into a directory of
// the test's, and returns it.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"github.com/agynio/users/cmd/users", "github.com/agynio/users/examples/goclient").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// startServe starts "users serve" with exactly env and returns the address
// it logged that it serves on. When the test ends it is stopped with
// SIGTERM, and its log is shown if the test failed.
func startServe(t *testing.T, bin string, env map[string]string) string {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var log syncbuf.Buffer // stdout's lines and stderr, as they come
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			fmt.Fprintln(&log, lines.Text())
			var line struct{ Msg, Address string }
			if json.Unmarshal(lines.Bytes(), &line) == nil && line.Msg == "serving" {
				serving <- line.Address
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited
		select {
		case <-scanned:
		case <-time.After(waitTimeout):
			cmd.Process.Kill() //nolint:errcheck // it may exit meanwhile
			<-scanned
		}
		cmd.Wait() //nolint:errcheck // the test is over; its log says what happened
		if t.Failed() {
			t.Logf("users serve:\n%s", log.String())
		}
	})
	select {
	case addr := <-serving:
		return addr
	case <-scanned:
		t.Fatal("users serve exited before serving")
	case <-time.After(waitTimeout):
		t.Fatalf("users serve logged no \"serving\" line within %s", waitTimeout)
	}
	return ""
}
