package grpctls_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agynio/users/internal/config"
	"github.com/agynio/users/internal/grpctls"
	"github.com/agynio/users/internal/testing/certs"
)

var discard = slog.New(slog.DiscardHandler)

// keyLogDirEnv, set, makes TestMismatchedKeyNeverReachesTheLogs the child
// that serves the files of that directory.
const keyLogDirEnv = "GRPCTLS_TEST_KEY_LOG_DIR"

// A renewal that brings a key which is not the certificate's is refused,
// and the previous pair goes on being served; and with gRPC's own logging
// on at warning (GRPC_GO_LOG_SEVERITY_LEVEL, which gRPC reads once, at
// start-up, hence the child process), nothing of either key reaches the
// process's output.
func TestMismatchedKeyNeverReachesTheLogs(t *testing.T) {
	if dir := os.Getenv(keyLogDirEnv); dir != "" {
		serveMismatchedRenewal(t, dir)
		return
	}
	t.Parallel()
	ca := certs.NewCA(t, "ca")
	server, stranger := ca.Server(t, "server"), ca.Server(t, "stranger")
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		certName: server.CertPEM, keyName: server.KeyPEM, caName: ca.PEM,
		"next.crt": ca.Server(t, "renewed").CertPEM, "next.key": stranger.KeyPEM,
	} {
		certs.WriteFile(t, filepath.Join(dir, name), data)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestMismatchedKeyNeverReachesTheLogs$", "-test.v")
	cmd.Env = append(os.Environ(), keyLogDirEnv+"="+dir,
		"GRPC_GO_LOG_SEVERITY_LEVEL=warning", "GRPC_GO_LOG_VERBOSITY_LEVEL=99")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()

	leaked := strings.Contains(out.String(), "PRIVATE KEY")
	if leaked {
		t.Errorf("the output holds a PEM private key")
	}
	for name, key := range map[string][]byte{"the served key": server.KeyPEM, "the renewal's key": stranger.KeyPEM} {
		if n := linesIn(out.String(), key); n > 0 {
			t.Errorf("the output holds %d lines of %s", n, name)
			leaked = true
		}
	}
	if leaked || err != nil {
		// Not the output itself: it may hold a key.
		t.Fatalf("child: %v; output of %d bytes withheld", err, out.Len())
	}
}

// linesIn counts the lines of keyPEM's base64 body found in out: a log
// holding the key, whole or quoted, holds them.
func linesIn(out string, keyPEM []byte) int {
	n := 0
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if line != "" && !strings.HasPrefix(line, "-----") && strings.Contains(out, line) {
			n++
		}
	}
	return n
}

// serveMismatchedRenewal is the child: it serves dir's pair, renames the
// renewal (a certificate and a key that are not its) into place, waits for
// the refusal to be logged, and checks the old pair is still served.
func serveMismatchedRenewal(t *testing.T, dir string) {
	logs := &watchedLog{}
	cfg := config.TLS{CertFile: filepath.Join(dir, certName), KeyFile: filepath.Join(dir, keyName)}
	creds, err := grpctls.New(cfg, refresh, slog.New(slog.NewJSONHandler(io.MultiWriter(os.Stderr, logs), nil)))
	if err != nil {
		t.Fatalf("grpctls.New: %v", err)
	}
	t.Cleanup(creds.Close)
	addr, _ := serve(t, creds)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(readFile(t, filepath.Join(dir, caName))) {
		t.Fatal("no CA certificate")
	}
	client := client{roots: roots}.creds(t)
	block, _ := pem.Decode(readFile(t, cfg.CertFile))
	served, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"crt", "key"} {
		if err := os.Rename(filepath.Join(dir, "next."+name), filepath.Join(dir, "tls."+name)); err != nil {
			t.Fatal(err)
		}
	}
	logs.waitFor(t, "TLS certificate and key not reloaded")

	got, err := check(t, addr, client)
	if err != nil {
		t.Fatalf("after the refused renewal: Check: %v", err)
	}
	if !got.Equal(served) {
		t.Errorf("after the refused renewal the server presents %q, want the previous %q", got.Subject, served.Subject)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// watchedLog is a log sink a test can wait on.
type watchedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *watchedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// waitFor returns once the log holds s, failing after rotationTimeout.
func (l *watchedLog) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(rotationTimeout)
	for {
		l.mu.Lock()
		found := strings.Contains(l.buf.String(), s)
		l.mu.Unlock()
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged within %s", s, rotationTimeout)
		}
		time.Sleep(refresh / 2)
	}
}
