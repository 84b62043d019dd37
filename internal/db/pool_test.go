package db_test

import (
	"runtime"
	"testing"

	"github.com/agynio/users/internal/db"
)

// TestPoolSize: the pool's size is the service's fixed default where
// nothing sets it, whatever the node's CPUs; pool_max_conns in the URL wins
// over the default, and PoolOptions.MaxConns (DB_MAX_CONNS) over both.
// Not parallel: it sets GOMAXPROCS, as a pod on a 64-core node would see.
func TestPoolSize(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(64))
	const url = "postgres://users@127.0.0.1:1/users" // never connected to: the pool is lazy
	tests := []struct {
		name string
		url  string
		opts db.PoolOptions
		want int32
	}{
		{"nothing set is the fixed default on a large node", url, db.PoolOptions{}, 16},
		{"pool_max_conns in the URL wins over the default", url + "?pool_max_conns=5", db.PoolOptions{}, 5},
		{"MaxConns wins over the default", url, db.PoolOptions{MaxConns: 7}, 7},
		{"MaxConns wins over pool_max_conns in the URL", url + "?pool_max_conns=5", db.PoolOptions{MaxConns: 7}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := db.NewPool(t.Context(), tt.url, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			if got := pool.Config().MaxConns; got != tt.want {
				t.Errorf("MaxConns = %d, want %d", got, tt.want)
			}
		})
	}
}
