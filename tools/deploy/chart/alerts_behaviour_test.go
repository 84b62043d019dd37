package chart

// What the alerts do on series: each rendered rule is evaluated by
// Prometheus' own rule engine, once a minute as a rule group would be,
// over synthetic series written in promqltest's load syntax, and must
// fire on its case and stay silent on the case next to it.

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
)

// alertSpan is how long each case's series run and its rules are
// evaluated: longer than every default for: and window.
const alertSpan = 20 * time.Minute

// firingAlerts loads series (promqltest's load syntax, one sample a
// minute from time 0), evaluates the rule every minute up to alertSpan,
// and returns the alerts firing at the end, each as its labels without
// the rule's own and the release's job and namespace.
func firingAlerts(t *testing.T, name string, r ruleUnderTest, series string) []string {
	t.Helper()
	storage := promqltest.LoadedStorage(t, "load 1m\n"+series)
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: promQL})
	t.Cleanup(func() { engine.Close() })

	hold, err := model.ParseDuration(r.forDuration)
	if err != nil {
		t.Fatalf("%s: for %q: %v", name, r.forDuration, err)
	}
	rule := rules.NewAlertingRule(name, parseExpr(t, name, r.expr), time.Duration(hold), 0,
		labels.FromMap(r.labels), labels.EmptyLabels(), labels.EmptyLabels(), "", false, slog.New(slog.DiscardHandler))
	query := rules.EngineQueryFunc(engine, storage)
	start := time.Unix(0, 0).UTC()
	for at := time.Duration(0); at <= alertSpan; at += time.Minute {
		if _, err := rule.Eval(context.Background(), 0, start.Add(at), query, nil, 0); err != nil {
			t.Fatalf("%s at %s: %v", name, at, err)
		}
	}
	var firing []string
	for _, a := range rule.ActiveAlerts() {
		if a.State == rules.StateFiring {
			l := labels.NewBuilder(a.Labels).Del(model.AlertNameLabel, "severity", "team", "job", "namespace").Labels()
			firing = append(firing, l.String())
		}
	}
	slices.Sort(firing)
	return firing
}

// ruleUnderTest is the part of a rendered alerting rule its evaluation
// needs.
type ruleUnderTest struct {
	expr, forDuration string
	labels            map[string]string
}

// TestAlertsFire: every alert of the chart with its default thresholds,
// on series of the release's job and namespace, fires on its case and
// stays silent on the near miss.
func TestAlertsFire(t *testing.T) {
	t.Parallel()
	rendered := alertingRules(t, prometheusRule(t, "-f", "ci/everything-values.yaml"))

	// The series' labels, as the ServiceMonitor scrapes them for the
	// release of ci/everything-values.yaml.
	const (
		release = `job="users-admin", namespace="platform"`
		calls   = release + `, grpc_service="agynio.api.users.v1.UsersService", grpc_method="GetUser", grpc_type="unary"`
		pool    = release + `, pool="service"`
	)
	// handled gives a call counter of code growing by perMinute a minute.
	handled := func(code, perMinute string) string {
		return `grpc_server_handled_total{` + calls + `, grpc_code="` + code + `"} 0+` + perMinute + "x20\n"
	}
	// latency gives the histogram of calls, 100 a minute, with under
	// (of 100) ending within 0.25s, 0.5s and 1s.
	latency := func(within250ms, within500ms, within1s string) string {
		var b strings.Builder
		for _, le := range [][2]string{{"0.25", within250ms}, {"0.5", within500ms}, {"1", within1s}, {"+Inf", "100"}} {
			b.WriteString(`grpc_server_handling_seconds_bucket{` + calls + `, le="` + le[0] + `"} 0+` + le[1] + "x20\n")
		}
		return b.String()
	}
	// gauge gives a series that holds value throughout.
	gauge := func(name, labels, value string) string {
		return name + "{" + labels + "} " + value + "x20\n"
	}
	const pod = `{pod="users-a"}`
	const poolPod = `{pod="users-a", pool="service"}`
	fires := []string{"{}"}

	for _, tc := range []struct {
		name   string
		alert  string
		series string
		want   []string
	}{
		// 10 calls a second.
		{"6% Unavailable", "UsersErrorRatioHigh", handled("OK", "564") + handled("Unavailable", "36"), fires},
		{"4% Unavailable", "UsersErrorRatioHigh", handled("OK", "576") + handled("Unavailable", "24"), nil},
		{"6% NotFound, the caller's doing", "UsersErrorRatioHigh", handled("OK", "564") + handled("NotFound", "36"), nil},
		{"3% Unavailable and 3% Internal", "UsersErrorRatioHigh", handled("OK", "564") + handled("Unavailable", "18") + handled("Internal", "18"), fires},
		{"every call failing, at 0.2 calls a second", "UsersErrorRatioHigh", handled("Internal", "12"), fires},
		{"a third failing, at 0.01 calls a second", "UsersErrorRatioHigh", handled("OK", "0.4") + handled("Internal", "0.2"), nil},
		{"no calls", "UsersErrorRatioHigh", handled("OK", "0") + handled("Internal", "0"), nil},

		{"p99 over 0.5s", "UsersLatencyHigh", latency("90", "95", "100"), []string{`{grpc_method="GetUser"}`}},
		{"p99 under 0.5s", "UsersLatencyHigh", latency("90", "100", "100"), nil},

		{"every pod unready", "UsersDatabaseUnreachable", gauge("users_ready", release+`, pod="users-a"`, "0") + gauge("users_ready", release+`, pod="users-b"`, "0"), fires},
		{"one pod of two unready", "UsersDatabaseUnreachable", gauge("users_ready", release+`, pod="users-a"`, "0") + gauge("users_ready", release+`, pod="users-b"`, "1"), nil},
		{"one pod of two unready", "UsersPodNotReady", gauge("users_ready", release+`, pod="users-a"`, "0") + gauge("users_ready", release+`, pod="users-b"`, "1"), []string{pod}},
		{"every pod unready, which UsersDatabaseUnreachable says", "UsersPodNotReady", gauge("users_ready", release+`, pod="users-a"`, "0") + gauge("users_ready", release+`, pod="users-b"`, "0"), nil},
		{"every pod ready", "UsersPodNotReady", gauge("users_ready", release+`, pod="users-a"`, "1") + gauge("users_ready", release+`, pod="users-b"`, "1"), nil},

		{"every connection in use", "UsersDatabasePoolSaturated", gauge("pgxpool_acquired_conns", pool+`, pod="users-a"`, "10") + gauge("pgxpool_max_conns", pool+`, pod="users-a"`, "10"), []string{poolPod}},
		{"eight connections of ten in use", "UsersDatabasePoolSaturated", gauge("pgxpool_acquired_conns", pool+`, pod="users-a"`, "8") + gauge("pgxpool_max_conns", pool+`, pod="users-a"`, "10"), nil},
		{"the migration pool full", "UsersDatabasePoolSaturated", gauge("pgxpool_acquired_conns", release+`, pool="migrate", pod="users-a"`, "10") + gauge("pgxpool_max_conns", release+`, pool="migrate", pod="users-a"`, "10"), nil},
		// 10 acquires a second, waiting 0.1s or 0.01s each.
		{"0.1s waits per acquire", "UsersDatabasePoolWaits", `pgxpool_acquire_count{` + pool + `, pod="users-a"} 0+600x20` + "\n" + `pgxpool_empty_acquire_wait_time_ns{` + pool + `, pod="users-a"} 0+60000000000x20` + "\n", []string{poolPod}},
		{"0.01s waits per acquire", "UsersDatabasePoolWaits", `pgxpool_acquire_count{` + pool + `, pod="users-a"} 0+600x20` + "\n" + `pgxpool_empty_acquire_wait_time_ns{` + pool + `, pod="users-a"} 0+6000000000x20` + "\n", nil},
		{"an acquire given up a minute", "UsersDatabasePoolAcquiresCanceled", `pgxpool_canceled_acquire_count{` + pool + `, pod="users-a"} 0+1x20` + "\n", []string{poolPod}},
		{"no acquire given up", "UsersDatabasePoolAcquiresCanceled", `pgxpool_canceled_acquire_count{` + pool + `, pod="users-a"} 0+0x20` + "\n", nil},

		{"1500 events pending", "UsersEventsBacklog", gauge("users_events_pending", release+`, pod="users-a"`, "1500"), fires},
		{"500 events pending", "UsersEventsBacklog", gauge("users_events_pending", release+`, pod="users-a"`, "500"), nil},
		{"the oldest event 10 minutes old", "UsersEventsDelayed", gauge("users_events_oldest_pending_age_seconds", release+`, pod="users-a"`, "600"), fires},
		{"the oldest event 2 minutes old", "UsersEventsDelayed", gauge("users_events_oldest_pending_age_seconds", release+`, pod="users-a"`, "120"), nil},
		{"no leader, events pending", "UsersEventsNotRelayed", gauge("users_events_relay_leader", release+`, pod="users-a"`, "0") + gauge("users_events_relay_leader", release+`, pod="users-b"`, "0") + gauge("users_events_pending", release+`, pod="users-a"`, "5"), fires},
		{"no leader, nothing pending", "UsersEventsNotRelayed", gauge("users_events_relay_leader", release+`, pod="users-a"`, "0") + gauge("users_events_relay_leader", release+`, pod="users-b"`, "0") + gauge("users_events_pending", release+`, pod="users-a"`, "0"), nil},
		{"a leader, events pending", "UsersEventsNotRelayed", gauge("users_events_relay_leader", release+`, pod="users-a"`, "0") + gauge("users_events_relay_leader", release+`, pod="users-b"`, "1") + gauge("users_events_pending", release+`, pod="users-a"`, "5"), nil},

		{"only another service's series", "UsersMetricsAbsent", gauge("users_build_info", `job="other-admin", namespace="platform", pod="other-a", version="1"`, "1"), []string{`{}`}},
		{"the release's series", "UsersMetricsAbsent", gauge("users_build_info", release+`, pod="users-a", version="1"`, "1"), nil},
	} {
		t.Run(tc.alert+"/"+tc.name, func(t *testing.T) {
			t.Parallel()
			r, ok := rendered[tc.alert]
			if !ok {
				t.Fatalf("the chart has no alert %s", tc.alert)
			}
			under := ruleUnderTest{expr: r.Expr.String(), labels: r.Labels}
			if r.For != nil {
				under.forDuration = string(*r.For)
			}
			got := firingAlerts(t, tc.alert, under, tc.series)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s fires for %v after %s, want %v\nexpr: %s\nseries:\n%s", tc.alert, got, alertSpan, tc.want, under.expr, tc.series)
			}
		})
	}
}
