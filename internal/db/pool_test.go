package db_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/agynio/users/internal/db"
)

// TestPoolSize: the pool's size is the service's fixed default where
// nothing sets it, whatever the node's CPUs; pool_max_conns in the
// connection string wins over the default, and PoolOptions.MaxConns
// (DB_MAX_CONNS) over both. Whether the string sets pool_max_conns is read
// as pgx reads it, in either form, and not from where the words appear.
// No database is needed: the pool is lazy and never connects.
// Not parallel: it sets GOMAXPROCS, as a pod on a 64-core node would see.
func TestPoolSize(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(64))
	const (
		url     = "postgres://users@127.0.0.1:1/users"
		keyword = "host=127.0.0.1 port=1 user=users dbname=users"
	)
	serviceFile := filepath.Join(t.TempDir(), "pg_service.conf")
	if err := os.WriteFile(serviceFile, []byte("[users]\nhost=127.0.0.1\nport=1\npool_max_conns=3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dsn  string
		opts db.PoolOptions
		want int32
	}{
		{"nothing set is the fixed default on a large node", url, db.PoolOptions{}, 16},
		{"nothing set in keyword/value form is the fixed default", keyword, db.PoolOptions{}, 16},
		{"pool_max_conns in the URL wins over the default", url + "?pool_max_conns=5", db.PoolOptions{}, 5},
		{"pool_max_conns in keyword/value form wins over the default", keyword + " pool_max_conns=5", db.PoolOptions{}, 5},
		{"pool_max_conns in a service file wins over the default", "service=users servicefile=" + serviceFile, db.PoolOptions{}, 3},
		{"pool_max_conns as a value in the URL is not the setting", url + "?application_name=pool_max_conns", db.PoolOptions{}, 16},
		{"pool_max_conns as a value in keyword/value form is not the setting", keyword + " application_name=pool_max_conns", db.PoolOptions{}, 16},
		{"pool_max_conns as a password is not the setting", "postgres://users:pool_max_conns@127.0.0.1:1/users", db.PoolOptions{}, 16},
		{"MaxConns wins over the default", url, db.PoolOptions{MaxConns: 7}, 7},
		{"MaxConns wins over pool_max_conns in the URL", url + "?pool_max_conns=5", db.PoolOptions{MaxConns: 7}, 7},
		{"MaxConns wins over pool_max_conns in keyword/value form", keyword + " pool_max_conns=5", db.PoolOptions{MaxConns: 7}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := db.NewPool(t.Context(), tt.dsn, tt.opts)
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
