package main

// The series the chart's alerts and dashboard read, as the binary serves
// them. helm/users/metrics.txt lists them with the label matchers put on
// them; tools/deploy/chart checks that the list is exactly what the
// alerts' and the dashboard's expressions select, and these tests that
// /metrics has a series matching every line: a renamed metric, or a label
// value changed (pool="service", the service's name, a code's spelling),
// fails one side or the other.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// seriesSelector is a line of helm/users/metrics.txt: a series name and
// the label matchers the alerts or the dashboard put on it.
type seriesSelector struct {
	line     string
	name     string
	matchers []labelMatcher
}

// labelMatcher is one PromQL label matcher: name, op (=, !=, =~, !~) and
// value.
type labelMatcher struct{ name, op, value string }

// labelPair matches name op "value" as PromQL and the text exposition
// format write them, the value Go-quoted.
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)("(?:[^"\\]|\\.)*")`)

// parseLabels parses the inside of a selector's or a sample's braces.
func parseLabels(t *testing.T, body string) []labelMatcher {
	t.Helper()
	var out []labelMatcher
	for _, m := range labelPair.FindAllStringSubmatch(body, -1) {
		v, err := strconv.Unquote(m[3])
		if err != nil {
			t.Fatalf("label %s in %q: %v", m[0], body, err)
		}
		out = append(out, labelMatcher{m[1], m[2], v})
	}
	if rest := strings.Trim(labelPair.ReplaceAllString(body, ""), ", "); rest != "" {
		t.Fatalf("%q: cannot read %q", body, rest)
	}
	return out
}

// alertSeries reads helm/users/metrics.txt: one selector a line, the name
// as /metrics writes it, and comments.
func alertSeries(t *testing.T) []seriesSelector {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "helm", "users", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []seriesSelector
	for _, line := range strings.Split(string(src), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sel := seriesSelector{line: line, name: line}
		if i := strings.IndexByte(line, '{'); i >= 0 {
			sel.name = line[:i]
			sel.matchers = parseLabels(t, strings.TrimSuffix(line[i+1:], "}"))
		}
		out = append(out, sel)
	}
	if len(out) == 0 {
		t.Fatal("metrics.txt lists no series")
	}
	return out
}

// servedSeries returns the labels of every sample line of p's /metrics by
// series name, as Prometheus stores them: a histogram's _bucket, _sum and
// _count apart.
func servedSeries(t *testing.T, p *proc) map[string][]map[string]string {
	t.Helper()
	code, body := adminGet(t, p, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	served := map[string][]map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels := line[:strings.IndexAny(line, "{ ")], map[string]string{}
		if rest := line[len(name):]; strings.HasPrefix(rest, "{") {
			for _, l := range parseLabels(t, rest[1:strings.LastIndexByte(rest, '}')]) {
				labels[l.name] = l.value
			}
		}
		served[name] = append(served[name], labels)
	}
	return served
}

func (m labelMatcher) String() string { return fmt.Sprintf("%s%s%q", m.name, m.op, m.value) }

// matches reports whether labels satisfy m, as Prometheus matches: a
// regular expression anchored at both ends, a missing label empty.
func (m labelMatcher) matches(labels map[string]string) bool {
	v := labels[m.name]
	switch m.op {
	case "=":
		return v == m.value
	case "!=":
		return v != m.value
	case "=~":
		return regexp.MustCompile("^(?:" + m.value + ")$").MatchString(v)
	default:
		return !regexp.MustCompile("^(?:" + m.value + ")$").MatchString(v)
	}
}

// plainAlternatives matches a regular expression made of plain
// alternatives only (Unknown|Internal), which wanted splits.
var plainAlternatives = regexp.MustCompile(`^[A-Za-z0-9_.:-]+(\|[A-Za-z0-9_.:-]+)*$`)

// wanted returns what of sel the served series must show: sel itself, and
// for each regular expression of plain alternatives, sel with each of
// them as an equality, so that one misspelt alternative fails too.
func (sel seriesSelector) wanted() [][]labelMatcher {
	out := [][]labelMatcher{sel.matchers}
	for i, m := range sel.matchers {
		if m.op != "=~" || !plainAlternatives.MatchString(m.value) {
			continue
		}
		for _, alt := range strings.Split(m.value, "|") {
			ms := slices.Clone(sel.matchers)
			ms[i] = labelMatcher{m.name, "=", alt}
			out = append(out, ms)
		}
	}
	return out
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
	for _, sel := range alertSeries(t) {
		for _, want := range sel.wanted() {
			found := slices.ContainsFunc(served[sel.name], func(labels map[string]string) bool {
				return !slices.ContainsFunc(want, func(m labelMatcher) bool { return !m.matches(labels) })
			})
			if !found {
				t.Errorf("/metrics has no series %s%v, which helm/users/metrics.txt's %s asks for: an alert or the dashboard reads it", sel.name, want, sel.line)
			}
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
