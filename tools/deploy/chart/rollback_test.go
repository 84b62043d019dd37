package chart

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
)

// TestNoHookRunsOnRollback holds the chart to what the README's "Upgrades
// and rollback" says: the migration Job is its only hook, run before an
// install and before an upgrade, and nothing runs on helm rollback, which
// runs only pre-rollback and post-rollback hooks: a rollback migrates
// nothing, and the schema stays as the newer release left it.
func TestNoHookRunsOnRollback(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			hooks := map[string][]string{}
			for _, o := range decode(t, vs.args...) {
				m, err := meta.Accessor(o.Object)
				if err != nil {
					t.Fatalf("%s: %v", o, err)
				}
				if v, ok := m.GetAnnotations()["helm.sh/hook"]; ok {
					events := strings.Split(v, ",")
					for i := range events {
						events[i] = strings.TrimSpace(events[i])
					}
					slices.Sort(events)
					hooks[o.String()] = events
				}
			}
			want := map[string][]string{"Job/users-migrate": {"pre-install", "pre-upgrade"}}
			if diff := cmp.Diff(want, hooks); diff != "" {
				t.Errorf("hooks and their events (-want +got):\n%s", diff)
			}
		})
	}
}
