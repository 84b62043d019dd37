package chart

// The PrometheusRule (templates/prometheusrule.yaml): valid as Prometheus
// itself loads a rule file, scoped to the release's series, following its
// values, and with the events' alerts only where a relay runs.

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/template"
	"sigs.k8s.io/yaml"
)

// promQL parses as a Prometheus started without feature flags does, so
// that an experimental function fails here as it would there.
var promQL = parser.NewParser(parser.Options{})

// prometheusRule renders the chart with args and returns its one
// PrometheusRule.
func prometheusRule(t *testing.T, args ...string) *monitoringv1.PrometheusRule {
	t.Helper()
	return find[*monitoringv1.PrometheusRule](t, decode(t, args...))
}

// alertingRules returns the alerting rules of pr by alert name, failing
// the test on a name used twice.
func alertingRules(t *testing.T, pr *monitoringv1.PrometheusRule) map[string]monitoringv1.Rule {
	t.Helper()
	rules := map[string]monitoringv1.Rule{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule that is no alert (record %q)", g.Name, r.Record)
				continue
			}
			if _, dup := rules[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			rules[r.Alert] = r
		}
	}
	return rules
}

// parseExpr parses a PromQL expression, failing the test if it does not.
func parseExpr(t *testing.T, what, expr string) parser.Expr {
	t.Helper()
	e, err := promQL.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, expr)
	}
	return e
}

// vectorSelectors returns every series selector of e, those inside range
// selectors and function calls included.
func vectorSelectors(e parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// seriesName is the metric name a selector reads, "" for none.
func seriesName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// listedSelector writes vs as metrics.txt lists it: the metric name and
// its label matchers in name order, without job and namespace, which pick
// the release and so differ between installations.
func listedSelector(vs *parser.VectorSelector) string {
	var ms []string
	for _, m := range vs.LabelMatchers {
		if m.Name != model.MetricNameLabel && m.Name != "job" && m.Name != "namespace" {
			ms = append(ms, m.String())
		}
	}
	if len(ms) == 0 {
		return seriesName(vs)
	}
	slices.Sort(ms)
	return seriesName(vs) + "{" + strings.Join(ms, ", ") + "}"
}

// matchers returns a selector's label matchers as PromQL writes them,
// the metric name left out.
func matchers(vs *parser.VectorSelector) []string {
	var out []string
	for _, m := range vs.LabelMatchers {
		if m.Name != model.MetricNameLabel {
			out = append(out, m.String())
		}
	}
	return out
}

// TestAlertsLoadInPrometheus: the rendered groups, written out as the
// Prometheus Operator writes a rule file, pass Prometheus' own loader
// (what promtool check rules runs: expressions, durations, label names,
// annotation templates), and every alert says how bad it is and what it
// means, in annotations that expand.
func TestAlertsLoadInPrometheus(t *testing.T) {
	t.Parallel()
	pr := prometheusRule(t, "-f", "ci/everything-values.yaml")
	file, err := yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := rulefmt.Parse(file, false, model.UTF8Validation, promQL, slog.Default()); len(errs) > 0 {
		t.Fatalf("Prometheus refuses the rule file: %v\n%s", errs, file)
	}

	// The labels a firing alert may carry, and a value, to expand with.
	firing := map[string]string{"namespace": "platform", "job": "users-admin", "pod": "users-abc12", "grpc_code": "Internal", "grpc_method": "GetUser"}
	for name, r := range alertingRules(t, pr) {
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", name, s)
		}
		if r.Labels["team"] != "identity" {
			t.Errorf("%s: labels %v lack prometheusRule.alertLabels (team: identity)", name, r.Labels)
		}
		if r.For == nil || *r.For == "" {
			t.Errorf("%s: no for: a single evaluation would page", name)
		}
		for _, key := range []string{"summary", "description"} {
			text := r.Annotations[key]
			if text == "" {
				t.Errorf("%s: no %s", name, key)
				continue
			}
			expanded, err := expandAnnotation(name, text, firing, 0.25)
			if err != nil {
				t.Errorf("%s: %s does not expand: %v", name, key, err)
			} else if strings.Contains(expanded, "{{") || strings.Contains(expanded, "<no value>") {
				t.Errorf("%s: %s expands to %q", name, key, expanded)
			}
		}
	}
}

// expandAnnotation expands text as Prometheus expands an alert's
// annotation, with $labels, $value and the template functions it has.
func expandAnnotation(alert, text string, alertLabels map[string]string, value float64) (string, error) {
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	data := template.AlertTemplateData(alertLabels, map[string]string{}, "", promql.Sample{F: value})
	exp := template.NewTemplateExpander(context.Background(), defs+text, "__alert_"+alert, data,
		model.TimeFromUnixNano(time.Now().UnixNano()), nil, nil, nil)
	return exp.Expand()
}

// TestAlertsReadOnlyTheRelease: every series an alert reads is picked by
// the release's matchers, by default the job and namespace the
// ServiceMonitor scrapes under, else prometheusRule.selector: an alert
// without them would fire for any service's gRPC calls or pool.
func TestAlertsReadOnlyTheRelease(t *testing.T) {
	t.Parallel()
	custom := filepath.Join(t.TempDir(), "selector.yaml")
	if err := os.WriteFile(custom, []byte("prometheusRule:\n  selector: 'cluster=~\"eu-.*\", job=\"platform-users\"'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"the ServiceMonitor's job and namespace", []string{"-f", "ci/everything-values.yaml"}, []string{`job="users-admin"`, `namespace="platform"`}},
		{"prometheusRule.selector", []string{"-f", "ci/everything-values.yaml", "-f", custom}, []string{`cluster=~"eu-.*"`, `job="platform-users"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for name, r := range alertingRules(t, prometheusRule(t, tc.args...)) {
				for _, vs := range vectorSelectors(parseExpr(t, name, r.Expr.String())) {
					got := matchers(vs)
					for _, w := range tc.want {
						if !slices.Contains(got, w) {
							t.Errorf("%s: %s lacks %s", name, vs, w)
						}
					}
				}
			}
		})
	}
}

// TestAlertsFollowTheirValues renders every threshold, window and for:
// at a value of its own and finds each in its alert: the threshold among
// the expression's numbers, the window as every range it selects.
func TestAlertsFollowTheirValues(t *testing.T) {
	t.Parallel()
	values := filepath.Join(t.TempDir(), "alerts.yaml")
	if err := os.WriteFile(values, []byte(`serviceMonitor:
  enabled: true
prometheusRule:
  enabled: true
  errorRatio: {threshold: 0.11, minRequestsPerSecond: 0.22, window: 7m, for: 3m}
  latency: {thresholdSeconds: 0.77, window: 9m, for: 13m}
  readiness: {allFor: 4m, oneFor: 17m}
  pool: {saturation: 0.66, acquireWaitSeconds: 0.033, window: 11m, for: 19m}
  events: {pending: 4321, oldestAgeSeconds: 654, for: 23m, noRelayFor: 29m}
  absentFor: 31m
events:
  nats:
    url: nats://nats:4222
`), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		forDuration string
		threshold   float64 // 0 for none
		window      string  // "" for no range
	}{
		"UsersErrorRatioHigh":               {"3m", 0.11, "7m"},
		"UsersLatencyHigh":                  {"13m", 0.77, "9m"},
		"UsersDatabaseUnreachable":          {"4m", 0, ""},
		"UsersPodNotReady":                  {"17m", 0, ""},
		"UsersDatabasePoolSaturated":        {"19m", 0.66, "11m"},
		"UsersDatabasePoolWaits":            {"19m", 0.033, "11m"},
		"UsersDatabasePoolAcquiresCanceled": {"19m", 0, "11m"},
		"UsersEventsBacklog":                {"23m", 4321, ""},
		"UsersEventsDelayed":                {"23m", 654, ""},
		"UsersEventsNotRelayed":             {"29m", 0, ""},
		"UsersMetricsAbsent":                {"31m", 0, ""},
	}
	rules := alertingRules(t, prometheusRule(t, "-f", values))
	if got, w := slices.Sorted(maps.Keys(rules)), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Fatalf("alerts %v, want %v (a new alert needs its values checked here)", got, w)
	}
	for name, w := range want {
		r := rules[name]
		if r.For == nil || string(*r.For) != w.forDuration {
			t.Errorf("%s: for %v, want %s", name, r.For, w.forDuration)
		}
		e := parseExpr(t, name, r.Expr.String())
		var numbers []float64
		var ranges []string
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			switch n := n.(type) {
			case *parser.NumberLiteral:
				numbers = append(numbers, n.Val)
			case *parser.MatrixSelector:
				ranges = append(ranges, model.Duration(n.Range).String())
			}
			return nil
		})
		if w.threshold != 0 && !slices.Contains(numbers, w.threshold) {
			t.Errorf("%s: numbers %v lack the threshold %v", name, numbers, w.threshold)
		}
		if name == "UsersErrorRatioHigh" && !slices.Contains(numbers, 0.22) {
			t.Errorf("%s: numbers %v lack the minimum call rate 0.22 (errorRatio.minRequestsPerSecond)", name, numbers)
		}
		for _, got := range ranges {
			if got != w.window {
				t.Errorf("%s: selects a range of %s, want %s", name, got, w.window)
			}
		}
		if w.window != "" && len(ranges) == 0 {
			t.Errorf("%s: selects no range, want %s", name, w.window)
		}
	}
}

// TestEventAlertsNeedTheRelay: without NATS_URL the outbox holds up to
// OUTBOX_RETENTION of events by design and no replica relays, so the
// events' alerts would fire for ever; they are left out. With the relay
// on, by any of the ways the chart sets NATS_URL, they are there.
func TestEventAlertsNeedTheRelay(t *testing.T) {
	t.Parallel()
	eventAlerts := []string{"UsersEventsBacklog", "UsersEventsDelayed", "UsersEventsNotRelayed"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no NATS", nil, nil},
		{"events.nats.url", []string{"--set", "events.nats.url=nats://nats:4222"}, eventAlerts},
		{"events.nats.existingSecret", []string{"--set", "events.nats.existingSecret.name=users-nats"}, eventAlerts},
		{"NATS_URL in env", []string{"--set", "env[0].name=NATS_URL", "--set", "env[0].value=nats://nats:4222"}, eventAlerts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rules := alertingRules(t, prometheusRule(t, append([]string{"--set", "prometheusRule.enabled=true,serviceMonitor.enabled=true"}, tc.args...)...))
			var got []string
			for name := range rules {
				if strings.HasPrefix(name, "UsersEvents") {
					got = append(got, name)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("events' alerts %v, want %v", got, tc.want)
			}
		})
	}
}
