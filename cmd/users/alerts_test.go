package main

// The series the chart's alerts and dashboard read, as the binary serves
// them. helm/users/metrics.txt lists them; tools/deploy/chart checks that
// the list is exactly what the alerts' and the dashboard's expressions
// name, and these tests that /metrics has every one: a renamed metric
// fails one side or the other.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/natstest"
	"github.com/agynio/users/internal/testing/testdb"
)

// alertSeries reads helm/users/metrics.txt: one series name a line, as
// /metrics writes it, and comments.
func alertSeries(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "helm", "users", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(src), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			names = append(names, line)
		}
	}
	if len(names) == 0 {
		t.Fatal("metrics.txt lists no series")
	}
	return names
}

// servedSeries returns the name of every sample line of p's /metrics,
// as Prometheus stores it: a histogram's _bucket, _sum and _count apart.
func servedSeries(t *testing.T, p *proc) map[string]bool {
	t.Helper()
	code, body := adminGet(t, p, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	served := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		served[line[:strings.IndexAny(line, "{ ")]] = true
	}
	return served
}

// TestServesTheSeriesTheAlertsRead runs serve relaying events to a NATS
// server, makes calls of each kind the alerts and the dashboard count
// (writes that publish events, a call that fails, one that gRPC refuses
// before the service), and then finds every series of metrics.txt in
// /metrics, with the values those calls give them.
func TestServesTheSeriesTheAlertsRead(t *testing.T) {
	t.Parallel()
	nats := natstest.Start(t)
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "NATS_URL": nats.URL()})
	users := usersv1.NewUsersServiceClient(dial(t, addr))
	ctx := rpcContext(t)

	// Two writes, two events.
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "alert-series"})
	if _, err := users.UpdateUser(ctx, &usersv1.UpdateUserRequest{IdentityId: user.GetMeta().GetId(), Name: proto.String("Alert Series")}); err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	if _, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: uuid.NewString()}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetUser of an unknown id: %v, want %s", err, codes.NotFound)
	}
	const filler = "oversized-"
	_, err := users.GetUser(ctx, &usersv1.GetUserRequest{IdentityId: strings.Repeat(filler, server.MaxRequestBytes/len(filler)+1)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("GetUser over the size limit: %v, want %s", err, codes.ResourceExhausted)
	}

	// The relay publishes within a second or so and then deletes what it
	// published, and a refused call is counted once its answer has gone:
	// wait for all three.
	within(t, 20*time.Second, "the two events published and gone from the outbox, and the refused call counted", func() bool {
		families := scrapeMetrics(t, p)
		published, _ := metricValue(families, "users_events_published_total", nil)
		pending, ok := metricValue(families, "users_events_pending", nil)
		_, refused := metricValue(families, "users_grpc_rejected_total", nil)
		return published >= 2 && ok && pending == 0 && refused
	})

	served := servedSeries(t, p)
	for _, name := range alertSeries(t) {
		if !served[name] {
			t.Errorf("/metrics has no %s, which helm/users/metrics.txt lists: an alert or the dashboard reads it", name)
		}
	}

	families := scrapeMetrics(t, p)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"users_ready", nil, 1},
		{"users_events_relay_leader", nil, 1},
		{"users_events_publish_failures_total", nil, 0},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "GetUser", "grpc_code": "NotFound"}, 1},
	} {
		if got, ok := metricValue(families, tc.name, tc.labels); !ok || got != tc.want {
			t.Errorf("%s%s = %v (present %t), want %v", tc.name, formatLabels(tc.labels), got, ok, tc.want)
		}
	}
}

// TestReadyMetricFollowsReadiness: users_ready is 1 exactly when /readyz
// answers 200: 0 with the database unreachable, 1 once it answers, and 0
// again from the moment shutdown begins, while calls are still served.
func TestReadyMetricFollowsReadiness(t *testing.T) {
	t.Parallel()
	ready := func(t *testing.T, p *proc) float64 {
		t.Helper()
		v, ok := metricValue(scrapeMetrics(t, p), "users_ready", nil)
		if !ok {
			t.Fatalf("/metrics has no users_ready")
		}
		return v
	}

	t.Run("the database unreachable", func(t *testing.T) {
		t.Parallel()
		dbURL := fmt.Sprintf("postgres://users@127.0.0.1:%d/users?sslmode=disable&connect_timeout=1", unusedLoopbackPort(t))
		p, _ := startServe(t, map[string]string{"DATABASE_URL": dbURL})
		waitForStatus(t, p, "/readyz", http.StatusServiceUnavailable)
		if got := ready(t, p); got != 0 {
			t.Errorf("users_ready = %v with /readyz 503, want 0", got)
		}
	})

	t.Run("the database answering, then the drain", func(t *testing.T) {
		t.Parallel()
		p, _ := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t), "DRAIN_DELAY": "1m"})
		waitForStatus(t, p, "/readyz", http.StatusOK)
		if got := ready(t, p); got != 1 {
			t.Errorf("users_ready = %v with /readyz 200, want 1", got)
		}
		p.terminate(t)
		waitForStatus(t, p, "/readyz", http.StatusServiceUnavailable)
		if got := ready(t, p); got != 0 {
			t.Errorf("users_ready = %v in the drain delay, /readyz 503, want 0", got)
		}
		// A second signal skips the rest of the drain delay.
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		p.wait(t, waitTimeout)
	})
}
