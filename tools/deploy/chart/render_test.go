// Package chart checks helm/users offline: helm lint --strict, and
// helm template for the default values and for ci/everything-values.yaml,
// every rendered document strictly decoded into its Kubernetes type, every
// pod held to the restricted Pod Security Standard, and the references
// between the objects (selectors, named ports) followed.
package chart

import (
	"os/exec"
	"slices"
	"testing"

	"github.com/agynio/users/tools/deploy/internal/repo"
	"github.com/agynio/users/tools/deploy/kube"
)

// valueSets are the two renders every check runs on.
var valueSets = []struct {
	name string
	args []string
}{
	{name: "default values"},
	{name: "everything enabled", args: []string{"-f", "ci/everything-values.yaml"}},
}

// render runs helm template on the chart as release "users" in namespace
// "platform" and returns the manifests, or helm's error output.
func render(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return repo.Template(t, args...)
}

// decode renders and strictly decodes, failing the test on any error.
func decode(t *testing.T, args ...string) []kube.Object {
	t.Helper()
	out, err := render(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs, err := kube.Decode([]byte(out))
	if err != nil {
		t.Fatalf("rendered manifests do not decode strictly:\n%v", err)
	}
	return objs
}

func TestLintStrict(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(repo.Helm(t), append([]string{"lint", "--strict", "."}, vs.args...)...)
			cmd.Dir = repo.Path(t, "helm", "users")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("helm lint --strict: %v\n%s", err, out)
			}
		})
	}
}

func TestRenderedKinds(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"default values": {
			"Deployment/users", "Job/users-migrate", "NetworkPolicy/users", "PodDisruptionBudget/users",
			"Service/users", "Service/users-admin", "ServiceAccount/users",
		},
		"everything enabled": {
			"ConfigMap/users-dashboard", "Deployment/users", "HorizontalPodAutoscaler/users", "Job/users-migrate", "NetworkPolicy/users",
			"PodDisruptionBudget/users", "PrometheusRule/users", "Service/users", "Service/users-admin", "ServiceAccount/users-server", "ServiceMonitor/users",
		},
	}
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, o := range decode(t, vs.args...) {
				got = append(got, o.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, want[vs.name]) {
				t.Errorf("rendered %v, want %v", got, want[vs.name])
			}
		})
	}
}

// TestPodsAreRestricted is the proof the chart asks no exemption: every
// pod it renders, the service's and the migration Job's, would be admitted
// into a namespace labelled pod-security.kubernetes.io/enforce=restricted.
func TestPodsAreRestricted(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			pods := 0
			for _, o := range decode(t, vs.args...) {
				meta, spec, ok := kube.PodTemplate(o.Object)
				if !ok {
					continue
				}
				pods++
				if err := kube.Restricted(meta, spec); err != nil {
					t.Errorf("%s: %v", o, err)
				}
			}
			if pods != 2 {
				t.Errorf("checked %d pod templates, want 2 (the Deployment and the migration Job)", pods)
			}
		})
	}
}
