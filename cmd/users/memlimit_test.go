package main

import (
	"math"
	"testing"

	"github.com/agynio/users/internal/testing/testdb"
)

// TestMemoryLimitFollowsTheContainer reads the Go runtime's soft memory
// limit from /metrics: set by serve from the container's memory limit (or
// the machine's memory outside one), never the runtime's unlimited
// default, and GOMEMLIMIT wins when it is set.
func TestMemoryLimitFollowsTheContainer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		check func(limit float64) bool
		want  string
	}{
		{
			name:  "without GOMEMLIMIT the limit is 90% of what there is",
			check: func(limit float64) bool { return limit > 0 && limit < math.MaxInt64/2 },
			want:  "a finite limit",
		},
		{
			name:  "GOMEMLIMIT wins",
			env:   map[string]string{"GOMEMLIMIT": "64MiB"},
			check: func(limit float64) bool { return limit == 64<<20 },
			want:  "64 MiB",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"DATABASE_URL": testdb.URL(t)}
			for k, v := range tt.env {
				env[k] = v
			}
			p, _ := startServe(t, env)
			got, ok := metricValue(scrapeMetrics(t, p), "go_gc_gomemlimit_bytes", nil)
			if !ok || !tt.check(got) {
				t.Errorf("go_gc_gomemlimit_bytes = %v (found: %v), want %s", got, ok, tt.want)
			}
		})
	}
}
