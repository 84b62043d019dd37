package chart

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// serverEnv renders with args and returns the service container's value
// of each of names ("" when unset).
func serverEnv(t *testing.T, names []string, args ...string) map[string]string {
	t.Helper()
	c := container(t, find[*appsv1.Deployment](t, decode(t, args...)).Spec.Template.Spec, "users")
	got := map[string]string{}
	for _, n := range names {
		e, _ := envVar(c, n)
		got[n] = e.Value
	}
	return got
}

// TestRolloutAndPoolSettings: drainDelaySeconds reaches the binary as
// DRAIN_DELAY and database.maxConns as DB_MAX_CONNS, with the defaults the
// chart README documents (5s, 11).
func TestRolloutAndPoolSettings(t *testing.T) {
	t.Parallel()
	names := []string{"DRAIN_DELAY", "SHUTDOWN_TIMEOUT", "DB_MAX_CONNS"}
	for _, tc := range []struct {
		name string
		args []string
		want map[string]string
	}{
		{
			name: "default values",
			want: map[string]string{"DRAIN_DELAY": "5s", "SHUTDOWN_TIMEOUT": "20s", "DB_MAX_CONNS": "11"},
		},
		{
			name: "set",
			args: []string{"--set", "drainDelaySeconds=12,terminationGracePeriodSeconds=40,database.maxConns=4"},
			want: map[string]string{"DRAIN_DELAY": "12s", "SHUTDOWN_TIMEOUT": "20s", "DB_MAX_CONNS": "4"},
		},
		{
			name: "no drain delay",
			args: []string{"--set", "drainDelaySeconds=0"},
			want: map[string]string{"DRAIN_DELAY": "0s", "SHUTDOWN_TIMEOUT": "20s", "DB_MAX_CONNS": "11"},
		},
		{
			name: "everything enabled",
			args: []string{"-f", "ci/everything-values.yaml"},
			want: map[string]string{"DRAIN_DELAY": "3s", "SHUTDOWN_TIMEOUT": "25s", "DB_MAX_CONNS": "8"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, serverEnv(t, names, tc.args...)); diff != "" {
				t.Errorf("environment (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGoRuntimeFollowsResources: without a CPU limit GOMAXPROCS is the
// CPU request rounded up (the downward API with divisor 1 rounds up), not
// the node's CPU count; with a CPU limit the chart leaves it to the
// runtime, which reads the limit. The defaults request CPU and limit
// memory, which the binary's own GOMEMLIMIT follows.
func TestGoRuntimeFollowsResources(t *testing.T) {
	t.Parallel()
	fromRequest := &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
		ContainerName: "users",
		Resource:      "requests.cpu",
		Divisor:       resource.MustParse("1"),
	}}
	for _, tc := range []struct {
		name string
		args []string
		want *corev1.EnvVarSource
	}{
		{name: "default values", want: fromRequest},
		{name: "a larger request", args: []string{"--set", "resources.requests.cpu=1500m"}, want: fromRequest},
		{name: "a CPU limit", args: []string{"--set", "resources.limits.cpu=2"}},
		{name: "everything enabled", args: []string{"-f", "ci/everything-values.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := container(t, find[*appsv1.Deployment](t, decode(t, tc.args...)).Spec.Template.Spec, "users")
			e, set := envVar(c, "GOMAXPROCS")
			if tc.want == nil {
				if set {
					t.Errorf("GOMAXPROCS = %+v with a CPU limit, want it left to the runtime", e)
				}
				return
			}
			if e.Value != "" {
				t.Errorf("GOMAXPROCS = %q, want it from the downward API", e.Value)
			}
			if diff := cmp.Diff(tc.want, e.ValueFrom); diff != "" {
				t.Errorf("GOMAXPROCS source (-want +got):\n%s", diff)
			}
			if c.Resources.Requests.Cpu().IsZero() {
				t.Errorf("no CPU request: GOMAXPROCS would follow nothing")
			}
			if c.Resources.Limits.Memory().IsZero() {
				t.Errorf("no memory limit: the binary's GOMEMLIMIT would follow nothing")
			}
		})
	}
}
