package main

// Observability, end to end: the admin listener (/healthz, /readyz,
// /metrics), the per-call log lines and what they must never hold, and the
// OpenTelemetry spans, each seen from outside the built binary as an
// operator's tools would see them.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestHealthzAndReadyz follows the probes through a service's life: live
// and ready while the database answers, then, once SIGTERM has started the
// drain, still live but no longer ready, so that a balancer stops sending
// while the calls in flight finish.
func TestHealthzAndReadyz(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	// A drain longer than any wait of the test's, so that the probes are
	// looked at while it lasts.
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL, "SHUTDOWN_TIMEOUT": "2m", "DB_TIMEOUT": "2m"})

	if code, body := adminGet(t, p, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q, want 200", code, body)
	}
	// serve pings the database once before it announces itself, and again
	// every 2s should that first ping have been too slow.
	waitForStatus(t, p, "/readyz", http.StatusOK)

	// An UpdateUser held on a row lock keeps the drain going for as long as
	// the test needs to look at the probes.
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "readyz-drain"})
	lock := lockUser(t, dbURL, user.GetMeta().GetId())
	update := startUpdate(t, users, user.GetMeta().GetId(), "Drained")
	lock.waitForWaiter(t)

	p.terminate(t)
	waitForStatus(t, p, "/readyz", http.StatusServiceUnavailable)
	if p.hasExited() {
		t.Fatalf("users exited (code %d) with UpdateUser still in flight", p.cmd.ProcessState.ExitCode())
	}
	if code, body := adminGet(t, p, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d %q, want 200: the process is alive", code, body)
	}

	lock.release(t)
	if res := update.result(t); res.err != nil {
		t.Errorf("in-flight UpdateUser: %v, want it to complete while the server drains", res.err)
	}
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestReadyzWhileTheDatabaseIsUnreachable starts serve against a port that
// refuses connections: the process is alive, not ready, and a call fails
// UNAVAILABLE with the cause in the log (and only there).
func TestReadyzWhileTheDatabaseIsUnreachable(t *testing.T) {
	t.Parallel()
	dbURL := fmt.Sprintf("postgres://users@127.0.0.1:%d/users?sslmode=disable&connect_timeout=1", unusedLoopbackPort(t))
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL})

	if code, body := adminGet(t, p, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q, want 200: restarting would not bring the database back", code, body)
	}
	if code, body := adminGet(t, p, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the database unreachable: %d %q, want 503", code, body)
	}

	users := usersv1.NewUsersServiceClient(dial(t, addr))
	_, err := users.GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("GetUser: code %s (%v), want %s", got, err, codes.Unavailable)
	}
	if strings.Contains(status.Convert(err).Message(), "refused") {
		t.Errorf("GetUser: message %q carries the driver's error, which belongs in the log only", status.Convert(err).Message())
	}

	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	records := logRecords(t, p.stdout.String())
	cause := findRecord(records, func(r logRecord) bool { return r["msg"] == "database unavailable" })
	if cause == nil {
		t.Fatalf("no %q log line for the failed GetUser", "database unavailable")
	}
	if errText, _ := cause["error"].(string); !strings.Contains(errText, "refused") {
		t.Errorf("%q line: error = %q, want the driver's cause (connection refused)", "database unavailable", errText)
	}
	if method, _ := cause["method"].(string); method != usersv1.UsersService_GetUser_FullMethodName {
		t.Errorf("%q line: method = %q, want %q", "database unavailable", method, usersv1.UsersService_GetUser_FullMethodName)
	}
	if got := callSummaries(records, usersService); !cmp.Equal(got, []string{"GetUser Unavailable"}) {
		t.Errorf("finished call lines = %q, want one for the GetUser, Unavailable", got)
	}
}

// TestMetrics makes known calls and reads them back from /metrics the way
// Prometheus would: per-method, per-code counters and a latency histogram
// from the gRPC interceptors, the service pool's statistics, the Go and
// process collectors, and the build info.
func TestMetrics(t *testing.T) {
	t.Parallel()
	// A pool size of its own, so that the test can tell the service's pool
	// (which /metrics must show) from the health check's one-connection pool.
	const maxConns = 7
	dbURL := testdb.WithQuery(t, testdb.URL(t), "pool_max_conns", strconv.Itoa(maxConns))
	p, addr := startServe(t, map[string]string{"DATABASE_URL": dbURL})
	users := usersv1.NewUsersServiceClient(dial(t, addr))

	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "metrics"})
	ctx := rpcContext(t)
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: user.GetMeta().GetId()}); err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: uuid.NewString()}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetUser of an unknown id: %v, want %s", err, codes.NotFound)
	}

	// The interceptor records a call before its response is sent, so the
	// scrape after the last response has seen every call.
	families := scrapeMetrics(t, p)
	method := func(name string, more ...string) map[string]string {
		labels := map[string]string{"grpc_service": usersService, "grpc_method": name, "grpc_type": "unary"}
		for i := 0; i+1 < len(more); i += 2 {
			labels[more[i]] = more[i+1]
		}
		return labels
	}

	t.Run("calls are counted by method and code", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			family string
			labels map[string]string
			want   float64
		}{
			{"GetUser OK", "grpc_server_handled_total", method("GetUser", "grpc_code", "OK"), 1},
			{"GetUser NotFound", "grpc_server_handled_total", method("GetUser", "grpc_code", "NotFound"), 1},
			{"ResolveOrCreateUser OK", "grpc_server_handled_total", method("ResolveOrCreateUser", "grpc_code", "OK"), 1},
			{"GetUser started", "grpc_server_started_total", method("GetUser"), 2},
			// Every method shows from the start, at zero, so that a
			// dashboard's rate() has a series before the first call.
			{"a method never called shows at zero", "grpc_server_handled_total", method("BatchGetUsers", "grpc_code", "OK"), 0},
		} {
			if got, ok := metricValue(families, tc.family, tc.labels); !ok {
				t.Errorf("%s: no %s%s", tc.name, tc.family, formatLabels(tc.labels))
			} else if got != tc.want {
				t.Errorf("%s: %s%s = %v, want %v", tc.name, tc.family, formatLabels(tc.labels), got, tc.want)
			}
		}
	})

	t.Run("latency is a histogram per method", func(t *testing.T) {
		m := findMetric(families, "grpc_server_handling_seconds", method("GetUser"))
		if m == nil || m.GetHistogram() == nil {
			t.Fatalf("no grpc_server_handling_seconds histogram for GetUser")
		}
		if got := m.GetHistogram().GetSampleCount(); got != 2 {
			t.Errorf("grpc_server_handling_seconds_count for GetUser = %d, want 2", got)
		}
	})

	t.Run("the service pool's statistics", func(t *testing.T) {
		// The names pgxpoolprometheus v1.1.3 exports.
		for _, name := range []string{
			"pgxpool_acquire_count", "pgxpool_acquire_duration_ns", "pgxpool_acquired_conns",
			"pgxpool_canceled_acquire_count", "pgxpool_constructing_conns", "pgxpool_empty_acquire",
			"pgxpool_empty_acquire_wait_time_ns", "pgxpool_idle_conns", "pgxpool_max_conns",
			"pgxpool_total_conns", "pgxpool_new_conns_count", "pgxpool_max_lifetime_destroy_count",
			"pgxpool_max_idle_destroy_count",
		} {
			if _, ok := metricValue(families, name, map[string]string{"pool": "service"}); !ok {
				t.Errorf("no %s{pool=\"service\"}", name)
			}
		}
		if got, _ := metricValue(families, "pgxpool_max_conns", map[string]string{"pool": "service"}); got != maxConns {
			t.Errorf("pgxpool_max_conns = %v, want %d (pool_max_conns of DATABASE_URL): not the service's pool", got, maxConns)
		}
		if got, _ := metricValue(families, "pgxpool_acquire_count", map[string]string{"pool": "service"}); got < 3 {
			t.Errorf("pgxpool_acquire_count = %v, want at least 3 (one per call made)", got)
		}
	})

	t.Run("Go runtime and process", func(t *testing.T) {
		if got, ok := metricValue(families, "go_goroutines", nil); !ok || got <= 0 {
			t.Errorf("go_goroutines = %v (present %t), want a positive count", got, ok)
		}
		if runtime.GOOS == "linux" { // the process collector reads /proc
			if _, ok := metricValue(families, "process_cpu_seconds_total", nil); !ok {
				t.Errorf("no process_cpu_seconds_total")
			}
		}
	})

	t.Run("build info", func(t *testing.T) {
		// The test binary is built without the release's -ldflags stamp.
		m := findMetric(families, "users_build_info", map[string]string{"version": "dev"})
		if m == nil {
			t.Fatalf("no users_build_info{version=\"dev\"}; families: %v", familyNames(families))
		}
		if got := m.GetGauge().GetValue(); got != 1 {
			t.Errorf("users_build_info = %v, want 1", got)
		}
		if rev := labelValue(m, "revision"); rev == "" {
			t.Errorf("users_build_info has no revision label")
		}
	})
}

// personalData is a user's claims, each distinctive enough that finding it
// in a log or a span can only mean the service wrote it there.
type personalData struct {
	token                                   string // in every one of the strings below
	subject, name, email, photoURL          string // of a first login
	badSubject, badName, badEmail, badPhoto string // of a login with malformed claims, and one with an overlong subject
	newName, newEmail, newPhoto             string // of an UpdateUser
	updateBadName, updateBadEmail           string // of an UpdateUser that fails validation
}

func newPersonalData() personalData {
	// Letters beyond hex, so that the token cannot turn up by chance inside
	// an identity id, a trace id or a timestamp.
	const letters = "ghijklmnopqrstuvwxyz"
	b := make([]byte, 16)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	tok := string(b)
	return personalData{
		token:          tok,
		subject:        "https://issuer.example.com|subject-" + tok,
		name:           "Name " + tok,
		email:          "mail-" + tok + "@example.com",
		photoURL:       "https://photos.example.com/" + tok + ".png",
		badSubject:     "bad-subject-" + tok,
		badName:        "Bad Name " + tok,
		badEmail:       "not an email " + tok,
		badPhoto:       "ftp://photos.example.com/bad-" + tok,
		newName:        "New Name " + tok,
		newEmail:       "new-mail-" + tok + "@example.com",
		newPhoto:       "https://photos.example.com/new-" + tok + ".png",
		updateBadName:  "Update Name " + tok,
		updateBadEmail: "update bad email " + tok,
	}
}

// all returns every string that must stay out of logs and spans.
func (pd personalData) all() []string {
	return []string{
		pd.token, pd.subject, pd.name, pd.email, pd.photoURL,
		pd.badSubject, pd.badName, pd.badEmail, pd.badPhoto,
		pd.newName, pd.newEmail, pd.newPhoto, pd.updateBadName, pd.updateBadEmail,
	}
}

// callWithPersonalData makes the calls that carry personal data: a first
// login, a returning one, one whose malformed claims are dropped, one that
// fails validation, a successful and a
// failed UpdateUser, and a lookup by subject. It returns the user and the
// codes the calls ended with, as the per-call log lines should show them.
func callWithPersonalData(t *testing.T, users usersv1.UsersServiceClient, pd personalData) (*usersv1.User, []string) {
	t.Helper()
	ctx := rpcContext(t)
	login := &usersv1.ResolveOrCreateUserRequest{OidcSubject: pd.subject, Name: pd.name, Email: pd.email, PhotoUrl: pd.photoURL}
	user := createUser(t, users, login)
	if _, err := users.ResolveOrCreateUser(ctx, login); err != nil {
		t.Fatalf("returning ResolveOrCreateUser: %v", err)
	}
	// A login never fails over an optional claim: the bad email and photo
	// URL are dropped. Only the subject can fail it.
	if _, err := users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: pd.badSubject, Name: pd.badName, Email: pd.badEmail, PhotoUrl: pd.badPhoto,
	}); err != nil {
		t.Fatalf("ResolveOrCreateUser with a bad email and photo URL: %v, want them dropped", err)
	}
	_, err := users.ResolveOrCreateUser(ctx, &usersv1.ResolveOrCreateUserRequest{
		OidcSubject: pd.badSubject + strings.Repeat("-", 256), Name: pd.badName,
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ResolveOrCreateUser with an overlong subject: %v, want %s", err, codes.InvalidArgument)
	}
	id := user.GetMeta().GetId()
	if _, err := users.UpdateUser(ctx, &usersv1.UpdateUserRequest{
		IdentityId: id, Name: proto.String(pd.newName), Email: proto.String(pd.newEmail), PhotoUrl: proto.String(pd.newPhoto),
	}); err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	_, err = users.UpdateUser(ctx, &usersv1.UpdateUserRequest{
		IdentityId: id, Name: proto.String(pd.updateBadName), Email: proto.String(pd.updateBadEmail),
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("UpdateUser with a bad email: %v, want %s", err, codes.InvalidArgument)
	}
	if _, err := users.GetUserByOIDCSubject(ctx, &usersv1.GetUserByOIDCSubjectRequest{OidcSubject: pd.subject}); err != nil {
		t.Fatalf("GetUserByOIDCSubject: %v", err)
	}
	return user, []string{
		"ResolveOrCreateUser OK", "ResolveOrCreateUser OK", "ResolveOrCreateUser OK", "ResolveOrCreateUser InvalidArgument",
		"UpdateUser OK", "UpdateUser InvalidArgument", "GetUserByOIDCSubject OK",
	}
}

// TestLogsOneLinePerCallWithoutPersonalData checks the per-call log: every
// UsersService call, whatever its outcome, makes exactly one "finished
// call" line with method, code, duration and peer; health checks make none
// at info level; and no name, email, photo URL or OIDC subject from any
// request reaches stdout or stderr.
func TestLogsOneLinePerCallWithoutPersonalData(t *testing.T) {
	t.Parallel()
	// At debug, where every call has its line.
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "LOG_LEVEL": "debug"})
	cc := dial(t, addr)
	users := usersv1.NewUsersServiceClient(cc)
	pd := newPersonalData()

	user, want := callWithPersonalData(t, users, pd)
	ctx := rpcContext(t)
	id := user.GetMeta().GetId()
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: id}); err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: uuid.NewString()}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetUser of an unknown id: %v, want %s", err, codes.NotFound)
	}
	if _, err := users.BatchGetUsers(ctx, &usersv1.BatchGetUsersRequest{IdentityIds: []string{id}}); err != nil {
		t.Fatalf("BatchGetUsers: %v", err)
	}
	want = append(want, "GetUser OK", "GetUser NotFound", "BatchGetUsers OK")
	tokenCalls, tokenSecrets := callWithTokens(t, users, id)
	want = append(want, tokenCalls...)
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health Check: %v", err)
	}

	// After the exit every line is written and read.
	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	stdout, stderr := p.stdout.String(), p.stderr.String()
	records := logRecords(t, stdout)

	if diff := cmp.Diff(want, callSummaries(records, usersService)); diff != "" {
		t.Errorf("finished call lines, as method and code, one per call in order (-want +got):\n%s", diff)
	}
	for _, r := range records {
		if r["msg"] != "finished call" {
			continue
		}
		// A call that succeeds at debug, one that fails at info.
		if want := map[bool]string{true: "DEBUG", false: "INFO"}[r["grpc.code"] == "OK"]; r["level"] != want {
			t.Errorf("finished call line for %v %v %v: level %v, want %s", r["grpc.service"], r["grpc.method"], r["grpc.code"], r["level"], want)
		}
		if r["grpc.service"] != usersService {
			continue
		}
		if ms, ok := milliseconds(r["grpc.time_ms"]); !ok || ms < 0 {
			t.Errorf("finished call line for %v: grpc.time_ms = %#v, want a duration in milliseconds", r["grpc.method"], r["grpc.time_ms"])
		}
		peerAddr, _ := r["peer.address"].(string)
		if host, _, err := net.SplitHostPort(peerAddr); err != nil || host != "127.0.0.1" {
			t.Errorf("finished call line for %v: peer.address = %q, want the client's 127.0.0.1:port", r["grpc.method"], peerAddr)
		}
	}

	for _, s := range pd.all() {
		if strings.Contains(stdout, s) {
			t.Errorf("stdout holds personal data %q", s)
		}
		if strings.Contains(stderr, s) {
			t.Errorf("stderr holds personal data %q", s)
		}
	}
	for _, s := range tokenSecrets {
		if strings.Contains(stdout, s) || strings.Contains(stderr, s) {
			t.Errorf("the log holds an API token or its hash")
		}
	}
}

// TestLogLevel checks that LOG_LEVEL is obeyed both ways: warn drops the
// per-call info lines, debug adds the health checks' lines.
func TestLogLevel(t *testing.T) {
	t.Parallel()

	t.Run("warn suppresses the per-call info lines", func(t *testing.T) {
		t.Parallel()
		// At warn, serve does not log the "serving" line that startServe
		// waits for; it is ready once health answers.
		p, addr := startServeAtWarn(t, map[string]string{"DATABASE_URL": testdb.URL(t), "LOG_LEVEL": "warn"})
		users := usersv1.NewUsersServiceClient(dial(t, addr))
		user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "warn-level"})
		if _, err := users.GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: user.GetMeta().GetId()}); err != nil {
			t.Fatalf("GetUser: %v", err)
		}
		p.terminate(t)
		if code := p.wait(t, waitTimeout); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}

		records := logRecords(t, p.stdout.String())
		var warned bool
		for _, r := range records {
			switch r["level"] {
			case "WARN", "ERROR":
				warned = warned || r["msg"] == plaintextWarning
			default:
				t.Errorf("%v line %q logged at LOG_LEVEL=warn", r["level"], r["msg"])
			}
		}
		// Proof that the log works at all, and that warn is let through.
		if !warned {
			t.Errorf("no %q line at LOG_LEVEL=warn", plaintextWarning)
		}
	})

	t.Run("info logs the calls that fail, not those that succeed", func(t *testing.T) {
		t.Parallel()
		p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t)})
		users := usersv1.NewUsersServiceClient(dial(t, addr))
		user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "info-level"})
		if _, err := users.GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: user.GetMeta().GetId()}); err != nil {
			t.Fatalf("GetUser: %v", err)
		}
		_, err := users.GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("GetUser of an unknown id: %v, want %s", err, codes.NotFound)
		}
		p.terminate(t)
		if code := p.wait(t, waitTimeout); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		got := callSummaries(logRecords(t, p.stdout.String()), usersService)
		if want := []string{"GetUser NotFound"}; !cmp.Equal(got, want) {
			t.Errorf("finished call lines at info = %q, want %q", got, want)
		}
	})

	t.Run("debug shows health checks", func(t *testing.T) {
		t.Parallel()
		p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "LOG_LEVEL": "debug"})
		cc := dial(t, addr)
		if _, err := healthpb.NewHealthClient(cc).Check(rpcContext(t), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health Check: %v", err)
		}
		_, err := usersv1.NewUsersServiceClient(cc).GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: uuid.NewString()})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("GetUser of an unknown id: %v, want %s", err, codes.NotFound)
		}
		p.terminate(t)
		if code := p.wait(t, waitTimeout); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}

		records := logRecords(t, p.stdout.String())
		if got := callSummaries(records, "grpc.health.v1.Health"); !cmp.Equal(got, []string{"Check OK"}) {
			t.Errorf("health finished call lines = %q, want one for the Check", got)
		}
		for _, r := range records {
			if r["msg"] != "finished call" {
				continue
			}
			want := "INFO" // GetUser, NOT_FOUND
			if r["grpc.code"] == "OK" {
				want = "DEBUG"
			}
			if r["level"] != want {
				t.Errorf("finished call line for %v/%v: level %v, want %s", r["grpc.service"], r["grpc.method"], r["level"], want)
			}
		}
	})
}

// TestTracing runs serve against an OTLP collector in the test and calls
// it with a W3C traceparent, as a traced caller would: the RPC's span must
// continue the caller's trace, the SQL statement's span must hang below
// it, the call's log line must name the trace, and no span may carry a
// request's personal data or identity id (statement parameters above all).
func TestTracing(t *testing.T) {
	t.Parallel()
	collector := startTraceCollector(t, "127.0.0.1:0")
	p, addr := startServe(t, map[string]string{
		"DATABASE_URL":                testdb.URL(t),
		"LOG_LEVEL":                   "debug", // for the line of a call that succeeds
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + collector.addr,
		"OTEL_EXPORTER_OTLP_INSECURE": "true",
		"OTEL_BSP_SCHEDULE_DELAY":     "100", // milliseconds, so that spans leave soon
	})
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	pd := newPersonalData()
	user, _ := callWithPersonalData(t, users, pd)
	id := user.GetMeta().GetId()
	_, tokenSecrets := callWithTokens(t, users, id)

	traceID, parentID := randomBytes(16), randomBytes(8)
	traceparent := fmt.Sprintf("00-%x-%x-01", traceID, parentID)
	ctx := metadata.AppendToOutgoingContext(rpcContext(t), "traceparent", traceparent)
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: id}); err != nil {
		t.Fatalf("GetUser with traceparent %s: %v", traceparent, err)
	}

	// The spans are exported while the service runs, not only at exit.
	var rpcSpan, sqlSpan *collectedSpan
	deadline := time.Now().Add(waitTimeout)
	for {
		rpcSpan, sqlSpan = findTracedCall(collector.spans(), traceID, usersv1.UsersService_GetUser_FullMethodName)
		if sqlSpan != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within %s the collector got no server span of GetUser in trace %x with a SQL span below it; spans:\n%s",
				waitTimeout, traceID, describeSpans(collector.spans()))
		}
		time.Sleep(50 * time.Millisecond)
	}

	if got := rpcSpan.span.GetParentSpanId(); !bytes.Equal(got, parentID) {
		t.Errorf("GetUser span's parent = %x, want the caller's span %x", got, parentID)
	}
	if got := rpcSpan.resourceAttr("service.name"); got != "users" {
		t.Errorf("resource service.name = %q, want %q", got, "users")
	}
	if q := sqlSpan.attr("db.query.text"); !strings.Contains(q, "$1") {
		t.Errorf("SQL span's db.query.text = %q, want the statement with its placeholder", q)
	}

	// At exit the last spans are flushed; then look at all of them.
	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	// The whole span as JSON: attributes, events, status and all.
	for _, s := range collector.spans() {
		js, err := protojson.Marshal(s.span)
		if err != nil {
			t.Fatalf("marshal span: %v", err)
		}
		var found []string
		for _, secret := range append(pd.all(), id) {
			if strings.Contains(string(js), secret) {
				found = append(found, secret)
			}
		}
		if len(found) > 0 {
			t.Errorf("span %q from %s holds %q; attributes: %v", s.span.GetName(), s.scope.GetName(), found, attrKeys(s.span.GetAttributes()))
		}
		for _, secret := range tokenSecrets {
			if strings.Contains(string(js), secret) {
				t.Errorf("span %q from %s holds an API token or its hash; attributes: %v", s.span.GetName(), s.scope.GetName(), attrKeys(s.span.GetAttributes()))
			}
		}
	}

	records := logRecords(t, p.stdout.String())
	call := findRecord(records, func(r logRecord) bool {
		return r["msg"] == "finished call" && r["grpc.method"] == "GetUser"
	})
	if call == nil {
		t.Fatalf("no finished call line for GetUser")
	}
	if got, want := call["trace_id"], hex.EncodeToString(traceID); got != want {
		t.Errorf("GetUser's finished call line: trace_id = %v, want %s, the caller's trace", got, want)
	}
}

// TestTracingOffWithoutAnEndpoint runs serve without
// OTEL_EXPORTER_OTLP_ENDPOINT: no span may leave, even with a collector
// listening where the exporter's default endpoint (localhost:4317) points,
// and log lines carry no trace id even for a caller that sent one.
func TestTracingOffWithoutAnEndpoint(t *testing.T) {
	t.Parallel()
	collectorAddr := "127.0.0.1:4317"
	if l, err := net.Listen("tcp", collectorAddr); err != nil {
		// Taken (a collector on this machine, or a parallel run): still
		// listen somewhere, for the checks that do not need that port.
		t.Logf("default OTLP port taken (%v); the collector listens elsewhere", err)
		collectorAddr = "127.0.0.1:0"
	} else {
		l.Close()
	}
	collector := startTraceCollector(t, collectorAddr)
	// Every tracing variable but the endpoint: they alone must not turn it
	// on, and they let a wrongly started exporter reach the collector.
	p, addr := startServe(t, map[string]string{
		"DATABASE_URL":                testdb.URL(t),
		"LOG_LEVEL":                   "debug", // every line, to look for trace ids in
		"OTEL_EXPORTER_OTLP_INSECURE": "true",
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
	})
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "untraced"})
	ctx := metadata.AppendToOutgoingContext(rpcContext(t), "traceparent",
		fmt.Sprintf("00-%x-%x-01", randomBytes(16), randomBytes(8)))
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: user.GetMeta().GetId()}); err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}

	// Shutdown flushes whatever a tracer would have buffered, so by exit
	// anything exported has arrived.
	if spans := collector.spans(); len(spans) != 0 {
		t.Errorf("collector got %d spans from a serve without OTEL_EXPORTER_OTLP_ENDPOINT:\n%s", len(spans), describeSpans(spans))
	}
	records := logRecords(t, p.stdout.String())
	if serving := findRecord(records, func(r logRecord) bool { return r["msg"] == "serving" }); serving == nil || serving["tracing"] != false {
		t.Errorf("serving line: tracing = %v, want false", serving["tracing"])
	}
	for _, r := range records {
		if tid, ok := r["trace_id"]; ok {
			t.Errorf("%q line carries trace_id %v with tracing off", r["msg"], tid)
		}
	}
}

// adminGet fetches path from the admin listener.
func adminGet(t *testing.T, p *proc, path string) (code int, body string) {
	t.Helper()
	code, body, err := tryAdminGet(t, p, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return code, body
}

func tryAdminGet(t *testing.T, p *proc, path string) (code int, body string, err error) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.adminAddr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitForStatus polls path until it answers want, failing the test if it
// has not within 10s, several of the health watch's 2s intervals.
func waitForStatus(t *testing.T, p *proc, path string, want int) {
	t.Helper()
	const timeout = 10 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		code, body, err := tryAdminGet(t, p, path)
		switch {
		case err == nil && code == want:
			return
		case p.hasExited():
			t.Fatalf("users exited (code %d) before %s answered %d (last: %d %q, %v)", p.cmd.ProcessState.ExitCode(), path, want, code, body, err)
		case time.Now().After(deadline):
			t.Fatalf("%s still %d %q (%v) after %s, want %d", path, code, body, err, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unusedLoopbackPort returns a loopback port that refused connections a
// moment ago: one the kernel just handed out and that is closed again.
func unusedLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// startServeAtWarn starts serve at a log level that hides its "serving"
// line, so on a gRPC port chosen here, and returns once health answers
// SERVING there. Another process may take the port between its choice and
// serve's listen; then it tries again with another.
func startServeAtWarn(t *testing.T, env map[string]string) (*proc, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := fmt.Sprintf("127.0.0.1:%d", unusedLoopbackPort(t))
		full := map[string]string{"GRPC_ADDRESS": addr, "ADMIN_ADDRESS": "127.0.0.1:0"}
		for k, v := range env {
			full[k] = v
		}
		p := startUsers(t, full, "serve")
		health := healthpb.NewHealthClient(dial(t, addr))
		deadline := time.Now().Add(waitTimeout)
		for {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				return p, addr
			}
			if p.hasExited() {
				if attempt < 3 && strings.Contains(p.stderr.String(), "GRPC_ADDRESS") {
					break
				}
				t.Fatalf("users serve exited with code %d before serving\nstderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
			}
			if time.Now().After(deadline) {
				t.Fatalf("users serve not SERVING on %s within %s (last: %v, %v)", addr, waitTimeout, resp.GetStatus(), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// scrapeMetrics reads /metrics and parses it as Prometheus does.
func scrapeMetrics(t *testing.T, p *proc) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := adminGet(t, p, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v\n%s", err, body)
	}
	return families
}

// findMetric returns the metric of family name that has all of labels, or
// nil.
func findMetric(families map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	for _, m := range families[name].GetMetric() {
		matches := true
		for k, v := range labels {
			matches = matches && labelValue(m, k) == v
		}
		if matches {
			return m
		}
	}
	return nil
}

// metricValue is the value of a counter, gauge or untyped metric.
func metricValue(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	m := findMetric(families, name, labels)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.GetCounter().GetValue(), true
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), true
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// formatLabels writes labels as Prometheus does, in a stable order.
func formatLabels(labels map[string]string) string {
	pairs := make([]string, 0, len(labels))
	for k, v := range labels {
		pairs = append(pairs, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(pairs)
	return "{" + strings.Join(pairs, ",") + "}"
}

func familyNames(families map[string]*dto.MetricFamily) []string {
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	return names
}

// logRecord is one JSON log line.
type logRecord map[string]any

// logRecords parses the process's stdout, which must be JSON lines only:
// anything else would be lost on a log pipeline that expects them.
func logRecords(t *testing.T, stdout string) []logRecord {
	t.Helper()
	var records []logRecord
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r logRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Errorf("stdout line is not JSON: %q", sc.Text())
			continue
		}
		records = append(records, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read stdout: %v", err)
	}
	return records
}

func findRecord(records []logRecord, match func(logRecord) bool) logRecord {
	for _, r := range records {
		if match(r) {
			return r
		}
	}
	return nil
}

// callSummaries returns "method code" of every finished call line of
// service, in order.
func callSummaries(records []logRecord, service string) []string {
	var out []string
	for _, r := range records {
		if r["msg"] == "finished call" && r["grpc.service"] == service {
			out = append(out, fmt.Sprintf("%v %v", r["grpc.method"], r["grpc.code"]))
		}
	}
	return out
}

// milliseconds reads grpc.time_ms, which the logging middleware writes as
// a decimal string.
func milliseconds(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case string:
		f, err := strconv.ParseFloat(v, 64)
		return f, err == nil
	}
	return 0, false
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.UintN(256))
	}
	// An all-zero id is invalid in W3C trace context.
	b[0] |= 1
	return b
}

// traceCollector is an OTLP/gRPC trace receiver, as an OpenTelemetry
// Collector would be, that keeps every span it is sent.
type traceCollector struct {
	collectortracepb.UnimplementedTraceServiceServer
	addr string

	mu       sync.Mutex
	received []collectedSpan
}

// collectedSpan is a span with the resource and scope it came under.
type collectedSpan struct {
	resource *resourcepb.Resource
	scope    *commonpb.InstrumentationScope
	span     *tracepb.Span
}

// startTraceCollector listens on addr until t ends.
func startTraceCollector(t *testing.T, addr string) *traceCollector {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &traceCollector{addr: l.Addr().String()}
	srv := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(srv, c)
	go srv.Serve(l) //nolint:errcheck // ends with Stop below
	t.Cleanup(srv.Stop)
	return c
}

func (c *traceCollector) Export(_ context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.received = append(c.received, collectedSpan{resource: rs.GetResource(), scope: ss.GetScope(), span: s})
			}
		}
	}
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

func (c *traceCollector) spans() []collectedSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]collectedSpan(nil), c.received...)
}

func (s *collectedSpan) attr(key string) string { return stringAttr(s.span.GetAttributes(), key) }

func (s *collectedSpan) resourceAttr(key string) string {
	return stringAttr(s.resource.GetAttributes(), key)
}

func attrKeys(attrs []*commonpb.KeyValue) []string {
	keys := make([]string, len(attrs))
	for i, kv := range attrs {
		keys[i] = kv.GetKey()
	}
	return keys
}

func stringAttr(attrs []*commonpb.KeyValue, key string) string {
	for _, kv := range attrs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// findTracedCall returns the server span of fullMethod in trace traceID
// and a SQL statement's span (from otelpgx) below it, each nil until seen.
func findTracedCall(spans []collectedSpan, traceID []byte, fullMethod string) (rpcSpan, sqlSpan *collectedSpan) {
	parents := map[string][]byte{} // span id → parent span id, within the trace
	for i := range spans {
		s := &spans[i]
		if !bytes.Equal(s.span.GetTraceId(), traceID) {
			continue
		}
		parents[string(s.span.GetSpanId())] = s.span.GetParentSpanId()
		if s.span.GetKind() == tracepb.Span_SPAN_KIND_SERVER && "/"+s.span.GetName() == fullMethod {
			rpcSpan = s
		}
	}
	if rpcSpan == nil {
		return nil, nil
	}
	below := func(id []byte) bool {
		for range len(parents) + 1 { // a bound, should a parent chain loop
			parent, ok := parents[string(id)]
			if !ok {
				return false
			}
			if bytes.Equal(parent, rpcSpan.span.GetSpanId()) {
				return true
			}
			id = parent
		}
		return false
	}
	for i := range spans {
		s := &spans[i]
		if bytes.Equal(s.span.GetTraceId(), traceID) && s.scope.GetName() == "github.com/exaring/otelpgx" &&
			s.attr("db.query.text") != "" && below(s.span.GetSpanId()) {
			return rpcSpan, s
		}
	}
	return rpcSpan, nil
}

func describeSpans(spans []collectedSpan) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s %q scope=%s trace=%x span=%x parent=%x\n", s.span.GetKind(), s.span.GetName(),
			s.scope.GetName(), s.span.GetTraceId(), s.span.GetSpanId(), s.span.GetParentSpanId())
	}
	return b.String()
}
