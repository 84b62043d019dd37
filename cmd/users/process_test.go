package main

// Process tests: they build the users binary and run it as a process,
// with nothing but the environment they give it, against a database of
// their own from testdb. This file holds TestMain and the process harness;
// the tests are in serve_test.go, shutdown_test.go, cli_test.go and the
// other files of the package. (The tests of a deployed service are e2e/.)

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/agynio/users/internal/testing/syncbuf"
	"github.com/agynio/users/internal/testing/testdb"
)

// waitTimeout bounds every wait on the process or on an RPC, so that a
// broken binary fails the test instead of hanging it.
const waitTimeout = 30 * time.Second

// plaintextWarning is what serve logs at start-up without TLS.
const plaintextWarning = "gRPC serves plaintext, fit for local development only: set GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE"

// eventsPruned is what serve logs at start-up without NATS_URL.
const eventsPruned = "events not relayed (NATS_URL unset); the outbox is pruned"

// usersBin is the binary under test, built once by TestMain.
var usersBin string

// buildFlags are extra go build flags; race_test.go adds -race so that a
// race test run also race-checks the server process.
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "users-process-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "process tests:", err)
		os.Exit(1)
	}
	usersBin = filepath.Join(dir, "users")
	code := 1
	if err := build(usersBin); err != nil {
		fmt.Fprintln(os.Stderr, "process tests:", err)
	} else {
		code = testdb.Run(m)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles this package (the test's working directory) to out.
func build(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append(append([]string{"build"}, buildFlags...), "-o", out, ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

// environ turns env into a process environment. It is never nil: a nil
// exec.Cmd.Env would hand the binary the test's own environment, and with
// it the DATABASE_URL that withpg and make test set.
func environ(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// result is how a one-shot command ended.
type result struct {
	stdout, stderr string
	code           int
}

// runUsers runs the binary to completion with exactly env.
func runUsers(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return runBinary(t, usersBin, env, args...)
}

// runBinary runs bin, this tree's users or another release's, as runUsers
// does.
func runBinary(t *testing.T, bin string, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = environ(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("users %s: still running after %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), waitTimeout, &stdout, &stderr)
	}
	if exitErr := (*exec.ExitError)(nil); err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("users %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// proc is a running users process.
type proc struct {
	cmd    *exec.Cmd
	stdout *logSink
	stderr *syncbuf.Buffer
	exited chan struct{} // closed once the process has exited and its output is read

	adminAddr string // of the admin HTTP listener, once serving
}

// startUsers starts the binary with exactly env. If it is still running
// when t ends (the test failed, or never meant to stop it) it is killed,
// and on failure its output is logged.
func startUsers(t *testing.T, env map[string]string, args ...string) *proc {
	t.Helper()
	return startBinary(t, usersBin, env, args...)
}

// startBinary starts bin, this tree's users or another release's, as
// startUsers does.
func startBinary(t *testing.T, bin string, env map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{stdout: newLogSink(), stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = environ(env)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = 5 * time.Second // Wait must not hang on the output copiers
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start users: %v", err)
	}
	go func() {
		p.cmd.Wait() //nolint:errcheck // the exit status is read from ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		if !p.hasExited() {
			p.cmd.Process.Kill() //nolint:errcheck // it may exit on its own meanwhile
			select {
			case <-p.exited:
			case <-time.After(waitTimeout):
				t.Errorf("users (pid %d) still running %s after SIGKILL", p.cmd.Process.Pid, waitTimeout)
			}
		}
		if t.Failed() {
			t.Logf("users %s stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout, p.stderr)
		}
	})
	return p
}

// startServe starts "users serve" listening on ephemeral ports of 127.0.0.1
// and returns it once it has logged the addresses it serves on (the admin
// one in p.adminAddr).
func startServe(t *testing.T, env map[string]string) (p *proc, addr string) {
	t.Helper()
	return startServeBinary(t, usersBin, env)
}

// startServeBinary starts bin's serve, this tree's or another release's,
// as startServe does.
func startServeBinary(t *testing.T, bin string, env map[string]string) (p *proc, addr string) {
	t.Helper()
	full := map[string]string{"GRPC_ADDRESS": "127.0.0.1:0", "ADMIN_ADDRESS": "127.0.0.1:0"}
	for k, v := range env {
		full[k] = v
	}
	p = startBinary(t, bin, full, "serve")
	select {
	case line := <-p.stdout.serving:
		p.adminAddr = line.AdminAddress
		return p, line.Address
	case <-p.exited:
		t.Fatalf("users serve exited with code %d before serving\nstderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
	case <-time.After(waitTimeout):
		t.Fatalf("users serve logged no %q line within %s", "serving", waitTimeout)
	}
	return nil, ""
}

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// terminate sends SIGTERM, as an orchestrator stopping the pod would.
func (p *proc) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// wait returns the process's exit code, failing the test if it has not
// exited within timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("users still running %s later", timeout)
		return 0
	}
}

// dial returns a client connection to addr, closed when t ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%q): %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// rpcContext is the context for a test's RPCs: bounded, so that no call
// can hang the test.
func rpcContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// logSink collects the process's JSON log lines and hands the "serving"
// line to whoever waits on serving.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	scanned int      // bytes of buf already split into lines
	msgs    []string // "msg" of every JSON line, in order
	serving chan servingLine
}

// servingLine is what the "serving" log line says.
type servingLine struct {
	Address      string `json:"address"`
	AdminAddress string `json:"admin_address"`
}

func newLogSink() *logSink { return &logSink{serving: make(chan servingLine, 1)} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	for {
		rest := s.buf.Bytes()[s.scanned:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return len(p), nil
		}
		s.scanned += i + 1
		var rec struct {
			Msg string `json:"msg"`
			servingLine
		}
		if json.Unmarshal(rest[:i], &rec) != nil {
			continue // not a log record; String still shows it
		}
		s.msgs = append(s.msgs, rec.Msg)
		if rec.Msg == "serving" {
			select {
			case s.serving <- rec.servingLine:
			default:
			}
		}
	}
}

// messages returns the "msg" of every log line so far, less those with no
// fixed place among the others: the health watcher's "database reachable",
// which comes whenever its first ping returns, and the per-call lines.
func (s *logSink) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var msgs []string
	for _, m := range s.msgs {
		if m != "database reachable" && m != "finished call" {
			msgs = append(msgs, m)
		}
	}
	return msgs
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
