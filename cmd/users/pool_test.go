package main

import (
	"testing"

	"github.com/agynio/users/internal/testing/testdb"
)

// TestServicePoolSize reads the service pool's size from /metrics: 16
// where nothing sets it, even on a node with many CPUs (GOMAXPROCS stands
// in for one), and DB_MAX_CONNS over a pool_max_conns in DATABASE_URL.
func TestServicePoolSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  func(dbURL string) map[string]string
		want float64
	}{
		{
			name: "the default does not follow the node's CPUs",
			env: func(dbURL string) map[string]string {
				return map[string]string{"DATABASE_URL": dbURL, "GOMAXPROCS": "64"}
			},
			want: 16,
		},
		{
			name: "DB_MAX_CONNS wins over pool_max_conns in DATABASE_URL",
			env: func(dbURL string) map[string]string {
				return map[string]string{"DATABASE_URL": testdb.WithQuery(t, dbURL, "pool_max_conns", "5"), "DB_MAX_CONNS": "3"}
			},
			want: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := startServe(t, tt.env(testdb.URL(t)))
			got, ok := metricValue(scrapeMetrics(t, p), "pgxpool_max_conns", map[string]string{"pool": "service"})
			if !ok || got != tt.want {
				t.Errorf("pgxpool_max_conns{pool=\"service\"} = %v (found: %v), want %v", got, ok, tt.want)
			}
			p.terminate(t)
			if code := p.wait(t, waitTimeout); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
		})
	}
}
