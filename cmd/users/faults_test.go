package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/tcpproxy"
	"github.com/agynio/users/internal/testing/testdb"
)

// callTimeout is the client deadline of each call under load; a call that
// fails fast fails far within it.
const callTimeout = 5 * time.Second

// failFast is how long a call may take to fail while the database is
// away: about the service's connect timeout, with room for a slow machine.
const failFast = 3 * time.Second

// call is one finished call of a load.
type call struct {
	start    time.Time
	duration time.Duration
	code     codes.Code
}

// load calls GetUser from several goroutines until stopped, at most for
// a minute and 200,000 calls, and records every call.
type load struct {
	stop  context.CancelFunc
	wg    sync.WaitGroup
	mu    sync.Mutex
	calls []call
}

func startLoad(t *testing.T, users usersv1.UsersServiceClient, identityID string, workers int) *load {
	t.Helper()
	ctx, stop := context.WithTimeout(t.Context(), time.Minute)
	l := &load{stop: stop}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil && l.count() < 200_000 {
				callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
				start := time.Now()
				_, err := users.GetUser(callCtx, &usersv1.GetUserRequest{IdentityId: identityID})
				cancel()
				l.mu.Lock()
				l.calls = append(l.calls, call{start: start, duration: time.Since(start), code: status.Code(err)})
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.finish)
	return l
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// finish stops the load and waits for its calls to return.
func (l *load) finish() {
	l.stop()
	l.wg.Wait()
}

// since returns the calls that started at or after t.
func (l *load) since(t time.Time) []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []call
	for _, c := range l.calls {
		if !c.start.Before(t) {
			out = append(out, c)
		}
	}
	return out
}

// okSince reports whether a call that started at or after t succeeded.
func (l *load) okSince(t time.Time) bool {
	for _, c := range l.since(t) {
		if c.code == codes.OK {
			return true
		}
	}
	return false
}

// httpStatus is the status of GET url, or 0 if there was no answer.
func httpStatus(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// healthStatus is the server's grpc.health.v1 status.
func healthStatus(t *testing.T, cc *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := healthpb.NewHealthClient(cc).Check(rpcContext(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	return resp.GetStatus()
}

// within polls cond every 50ms until it holds, failing after limit.
func within(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The database goes away under load and comes back. While it is away,
// calls fail fast with UNAVAILABLE and the service reports itself not
// ready; once it is back the service recovers by itself within seconds,
// and the process never stops.
func TestDatabaseOutageUnderLoad(t *testing.T) {
	t.Parallel()
	direct, err := url.Parse(testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := tcpproxy.Start(direct.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	via := *direct
	via.Host = proxy.Addr()

	p, addr := startServe(t, map[string]string{"DATABASE_URL": via.String()})
	readyz := "http://" + p.adminAddr + "/readyz"
	cc := dial(t, addr)
	users := usersv1.NewUsersServiceClient(cc)
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "https://issuer.example.com|outage"})
	within(t, 10*time.Second, "/readyz never 200 with the database up", func() bool { return httpStatus(t, readyz) == http.StatusOK })

	l := startLoad(t, users, user.GetMeta().GetId(), 8)
	start := time.Now()
	within(t, 10*time.Second, "no call succeeded before the outage", func() bool { return l.okSince(start) })

	proxy.Cut()
	cut := time.Now()
	within(t, 10*time.Second, "/readyz still 200 with the database gone", func() bool { return httpStatus(t, readyz) == http.StatusServiceUnavailable })
	if got := healthStatus(t, cc); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health with the database gone = %v, want NOT_SERVING", got)
	}
	// Calls made once the outage is known to all of the service.
	known := time.Now()
	within(t, 10*time.Second, "no call failed during the outage", func() bool { return len(l.since(known)) > 0 })

	restored := time.Now() // before Restore, so that no call after it counts as in the outage
	proxy.Restore()
	within(t, 10*time.Second, "no call succeeded after the database came back", func() bool { return l.okSince(restored) })
	within(t, 10*time.Second, "/readyz not 200 again after the database came back", func() bool { return httpStatus(t, readyz) == http.StatusOK })
	if got := healthStatus(t, cc); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health after the database came back = %v, want SERVING", got)
	}
	l.finish()

	for _, c := range l.since(cut) {
		if !c.start.Before(restored) {
			continue
		}
		if c.code != codes.OK && c.code != codes.Unavailable {
			t.Errorf("a call during the outage ended %v, want UNAVAILABLE", c.code)
		}
		// (A call may start before Restore and connect after it.)
		if c.start.After(known) && c.start.Add(c.duration).Before(restored) && c.code == codes.OK {
			t.Errorf("a call during the outage succeeded")
		}
		if c.code == codes.Unavailable && c.duration > failFast {
			t.Errorf("a call during the outage took %s to fail, want under %s", c.duration, failFast)
		}
	}
	if p.hasExited() {
		t.Fatalf("users exited (code %d) during the outage", p.cmd.ProcessState.ExitCode())
	}
}

// SIGTERM under load: no call that reached the server fails, new calls are
// refused once the drain has begun, and the process exits within
// SHUTDOWN_TIMEOUT.
func TestShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 10 * time.Second
	dbURL := testdb.URL(t)
	// At debug, so that the calls that succeed are in the log too.
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL, "SHUTDOWN_TIMEOUT": shutdownTimeout.String(), "LOG_LEVEL": "debug"})
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "https://issuer.example.com|busy"})
	held := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "https://issuer.example.com|held"})

	// Calls that are in flight for sure when the signal comes: held on a
	// row lock until the drain has begun.
	lock := lockUser(t, dbURL, held.GetMeta().GetId())
	var updates []pendingUpdate
	for range 3 {
		updates = append(updates, startUpdate(t, users, held.GetMeta().GetId(), "Held"))
	}
	lock.waitForWaiter(t)

	l := startLoad(t, users, user.GetMeta().GetId(), 8)
	start := time.Now()
	within(t, 10*time.Second, "no call succeeded under load", func() bool { return l.okSince(start) })

	p.terminate(t)
	terminated := time.Now()
	within(t, 10*time.Second, "no call was refused after SIGTERM", func() bool {
		for _, c := range l.since(terminated) {
			if c.code == codes.Unavailable {
				return true
			}
		}
		return false
	})
	// A new client is refused too: the listener is closed.
	fresh := usersv1.NewUsersServiceClient(dial(t, addr))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	_, err := fresh.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: user.GetMeta().GetId()})
	cancel()
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("a new client's call while draining ended %v, want UNAVAILABLE", code)
	}
	if p.hasExited() {
		t.Fatal("users exited with calls still held in flight")
	}
	lock.release(t)

	for i, u := range updates {
		if res := u.result(t); res.err != nil {
			t.Errorf("held UpdateUser %d: %v, want it to complete during the drain", i, res.err)
		}
	}
	if code := p.wait(t, shutdownTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if took := time.Since(terminated); took > shutdownTimeout {
		t.Errorf("exited %s after SIGTERM, want within SHUTDOWN_TIMEOUT (%s)", took, shutdownTimeout)
	}
	l.finish()

	// Every call the server took, by its own log, succeeded; every call
	// the client saw fail was refused (UNAVAILABLE), not cut off.
	served := servedCodes(t, p.stdout.String())
	okAtClient := 0
	for _, c := range l.since(time.Time{}) {
		switch c.code {
		case codes.OK:
			okAtClient++
		case codes.Unavailable:
		default:
			t.Errorf("a call under load ended %v, want OK or UNAVAILABLE", c.code)
		}
	}
	for code, n := range served {
		if code != "OK" {
			t.Errorf("the server finished %d calls with %s during the shutdown, want none", n, code)
		}
	}
	// GetUser calls the server finished: the load's, plus the fresh
	// client's (none: it was refused).
	if served["OK"] < okAtClient {
		t.Errorf("the server logged %d OK calls, fewer than the %d the client saw", served["OK"], okAtClient)
	}
}

// servedCodes counts the UsersService calls in a serve log by their code.
func servedCodes(t *testing.T, log string) map[string]int {
	t.Helper()
	codes := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			Service string `json:"grpc.service"`
			Method  string `json:"grpc.method"`
			Code    string `json:"grpc.code"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "finished call" || rec.Service != "agynio.api.users.v1.UsersService" {
			continue
		}
		if rec.Method == "GetUser" {
			codes[rec.Code]++
		} else if rec.Code != "OK" {
			codes[rec.Method+" "+rec.Code]++
		}
	}
	return codes
}
