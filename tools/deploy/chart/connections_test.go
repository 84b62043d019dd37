package chart

import (
	"os"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agynio/users/tools/deploy/internal/repo"
	"github.com/agynio/users/tools/deploy/kube"
)

// postgresDefaultBudget is what a PostgreSQL server at its defaults leaves
// to roles that are not superusers: max_connections (100) less
// superuser_reserved_connections (3); reserved_connections, from
// PostgreSQL 16, is 0 by default.
const postgresDefaultBudget = 100 - 3

// peakConnections is the most database connections a render can hold at
// once, as README.md counts them: at the peak of a rollout
// R × (1 + maxSurge) pods, each with its pool (DB_MAX_CONNS), the health
// check's connection and, with NATS_URL, the relay's session; plus the
// migration Job's, which runs beside the old pods before the surge.
// R is the autoscaler's maximum when there is one.
func peakConnections(t *testing.T, objs []kube.Object) int {
	t.Helper()
	d := find[*appsv1.Deployment](t, objs)
	replicas := 1
	if d.Spec.Replicas != nil {
		replicas = int(*d.Spec.Replicas)
	}
	for _, o := range objs {
		if hpa, ok := o.Object.(*autoscalingv2.HorizontalPodAutoscaler); ok {
			replicas = int(hpa.Spec.MaxReplicas)
		}
	}
	surge := 0
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
		var err error
		// As the Deployment controller rounds a percentage: up.
		surge, err = intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, replicas, true)
		if err != nil {
			t.Fatal(err)
		}
	}
	c := container(t, d.Spec.Template.Spec, "users")
	maxConns, _ := envVar(c, "DB_MAX_CONNS")
	pool, err := strconv.Atoi(maxConns.Value)
	if err != nil {
		t.Fatalf("DB_MAX_CONNS %q: %v", maxConns.Value, err)
	}
	perPod := pool + 1 // the health check's own
	if _, relayed := envVar(c, "NATS_URL"); relayed {
		perPod++ // the relay's session
	}
	total := (replicas + surge) * perPod
	for _, o := range objs {
		if _, ok := o.Object.(*batchv1.Job); ok {
			total += jobConnections
		}
	}
	return total
}

// jobConnections is what the migration Job holds at once: the session
// holding the migration lock (which also runs the grants) and dbmate's own
// lib/pq connection, which applies the migrations.
const jobConnections = 2

// TestConnectionsFitPostgresDefaults: at the chart's defaults, with events
// relayed, autoscaling at its maximum, or both, the peak of a rollout
// stays under what PostgreSQL's default max_connections leaves, and
// equals the worked examples of README.md and of the chart's README.
func TestConnectionsFitPostgresDefaults(t *testing.T) {
	t.Parallel()
	events := "events.nats.existingSecret.name=users-nats"
	var readmes []string
	for _, path := range [][]string{{"README.md"}, {"helm", "users", "README.md"}} {
		src, err := os.ReadFile(repo.Path(t, path...))
		if err != nil {
			t.Fatal(err)
		}
		readmes = append(readmes, strings.Join(path, "/"), string(src))
	}
	for _, tc := range []struct {
		name   string
		args   []string
		want   int
		worked string // as both READMEs write it
	}{
		{name: "default values", want: 3*12 + 2, worked: "3 × 12 + 2 = 38"},
		{name: "events relayed", args: []string{"--set", events}, want: 3*13 + 2, worked: "3 × 13 + 2 = 41"},
		{name: "autoscaling", args: []string{"--set", "autoscaling.enabled=true"}, want: 7*12 + 2, worked: "7 × 12 + 2 = 86"},
		{name: "autoscaling, events relayed", args: []string{"--set", "autoscaling.enabled=true," + events}, want: 7*13 + 2, worked: "7 × 13 + 2 = 93"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := peakConnections(t, decode(t, tc.args...))
			if got != tc.want {
				t.Errorf("peak connections %d, want %d (%s)", got, tc.want, tc.worked)
			}
			for i := 0; i < len(readmes); i += 2 {
				if !strings.Contains(readmes[i+1], tc.worked) {
					t.Errorf("%s does not work out %q", readmes[i], tc.worked)
				}
			}
			if got >= postgresDefaultBudget {
				t.Errorf("peak connections %d, not under PostgreSQL's default budget of %d", got, postgresDefaultBudget)
			}
		})
	}
}
