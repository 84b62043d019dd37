package chart

// The Grafana dashboard (dashboards/users.json), its ConfigMap, and the
// list of series the dashboard and the alerts read (metrics.txt), which
// the process tests in cmd/users hold the binary's /metrics to.

import (
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/agynio/users/tools/deploy/internal/repo"
)

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboardExpr is one PromQL expression of the dashboard: a panel's
// target or a query variable's selector.
type dashboardExpr struct {
	where string
	expr  string
}

// readDashboard returns the dashboard's file and its expressions, each
// with Grafana's own interval variables replaced by a duration, as
// Grafana does before it sends a query.
func readDashboard(t *testing.T) (src []byte, exprs []dashboardExpr) {
	t.Helper()
	src, err := os.ReadFile(repo.Path(t, "helm", "users", "dashboards", "users.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(src, &d); err != nil {
		t.Fatalf("dashboards/users.json: %v", err)
	}
	intervals := regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)

	datasources := 0
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			datasources++
			if v.Name != "datasource" || string(v.Query) != `"prometheus"` {
				t.Errorf("variable %s: a datasource variable named datasource of type prometheus is expected, got query %s", v.Name, v.Query)
			}
		case "query":
			if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
				t.Errorf("variable %s: datasource %+v, want ${datasource}", v.Name, v.Datasource)
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
				continue
			}
			// label_values(selector, label): the selector is PromQL.
			m := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`).FindStringSubmatch(q.Query)
			if m == nil {
				t.Errorf("variable %s: query %q is no label_values(selector, label)", v.Name, q.Query)
				continue
			}
			exprs = append(exprs, dashboardExpr{"variable " + v.Name, m[1]})
		default:
			t.Errorf("variable %s of type %s: not checked here", v.Name, v.Type)
		}
	}
	if datasources != 1 {
		t.Errorf("%d datasource variables, want 1: the dashboard must not name a data source of one Grafana", datasources)
	}

	ids := map[int]string{}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %+v, want ${datasource}", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for i, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q, query %d: datasource %+v, want ${datasource}", p.Title, i+1, tg.Datasource)
				}
				exprs = append(exprs, dashboardExpr{"panel " + p.Title, intervals.ReplaceAllString(tg.Expr, "5m")})
			}
		}
	}
	walk(d.Panels)
	return src, exprs
}

// TestDashboardQueries: every query of the dashboard parses as PromQL,
// and every series it reads is picked by the dashboard's namespace and
// job variables, so that it shows one release.
func TestDashboardQueries(t *testing.T) {
	t.Parallel()
	_, exprs := readDashboard(t)
	if len(exprs) == 0 {
		t.Fatal("the dashboard has no query")
	}
	for _, de := range exprs {
		// The variables list what the others pick from.
		want := []string{`namespace="$namespace"`, `job="$job"`}
		switch de.where {
		case "variable namespace":
			want = nil
		case "variable job":
			want = want[:1]
		}
		for _, vs := range vectorSelectors(parseExpr(t, de.where, de.expr)) {
			got := matchers(vs)
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("%s: %s lacks %s", de.where, vs, w)
				}
			}
		}
	}
}

// TestDashboardConfigMap: with grafanaDashboard.enabled the chart ships
// the file unchanged, under the sidecar's label and the annotations given.
func TestDashboardConfigMap(t *testing.T) {
	t.Parallel()
	src, _ := readDashboard(t)
	var cm *corev1.ConfigMap
	for _, o := range decode(t, "-f", "ci/everything-values.yaml") {
		if c, ok := o.Object.(*corev1.ConfigMap); ok && c.Name == "users-dashboard" {
			cm = c
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap users-dashboard")
	}
	if got := cm.Labels["grafana_dashboard"]; got != "1" {
		t.Errorf("label grafana_dashboard = %q, want \"1\", which Grafana's sidecar looks for", got)
	}
	if got := cm.Annotations["grafana_folder"]; got != "Platform" {
		t.Errorf("annotation grafana_folder = %q, want Platform (grafanaDashboard.annotations)", got)
	}
	if got, want := cm.Data["users.json"], strings.TrimRight(string(src), "\n"); got != want {
		t.Errorf("data users.json is not dashboards/users.json (%d bytes, want %d)", len(got), len(want))
	}
}

// TestMetricsList: metrics.txt names exactly the series the alerts (with
// every option on) and the dashboard read, each with the label matchers
// they put on it other than the release's job and namespace, as found by
// parsing their expressions. cmd/users then checks that the binary serves
// a series matching each line, so that a label value the alerts rely on
// (pool="service", the gRPC service's name, the codes' spelling) cannot
// change under them either.
func TestMetricsList(t *testing.T) {
	t.Parallel()
	used := map[string][]string{} // selector → where
	for name, r := range alertingRules(t, prometheusRule(t, "-f", "ci/everything-values.yaml")) {
		for _, vs := range vectorSelectors(parseExpr(t, name, r.Expr.String())) {
			used[listedSelector(vs)] = append(used[listedSelector(vs)], "alert "+name)
		}
	}
	_, exprs := readDashboard(t)
	for _, de := range exprs {
		for _, vs := range vectorSelectors(parseExpr(t, de.where, de.expr)) {
			used[listedSelector(vs)] = append(used[listedSelector(vs)], de.where)
		}
	}
	for sel, where := range used {
		if strings.HasPrefix(sel, "{") {
			t.Errorf("a selector without a metric name, %s, in %v", sel, where)
			delete(used, sel)
		}
	}

	src, err := os.ReadFile(repo.Path(t, "helm", "users", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, line := range strings.Split(string(src), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			listed = append(listed, line)
		}
	}
	if !slices.IsSorted(listed) || len(slices.Compact(slices.Clone(listed))) != len(listed) {
		t.Errorf("metrics.txt is not sorted with each line once: %v", listed)
	}
	for _, sel := range slices.Sorted(maps.Keys(used)) {
		if !slices.Contains(listed, sel) {
			t.Errorf("metrics.txt lacks %s, read by %v", sel, slices.Compact(used[sel]))
		}
	}
	for _, sel := range listed {
		if _, ok := used[sel]; !ok {
			t.Errorf("metrics.txt lists %s, which neither an alert nor the dashboard reads", sel)
		}
	}
}
