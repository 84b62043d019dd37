// Command locktime measures how long the migrations after the first hold
// up the service's statements on a large, live users table:
//
//	DATABASE_URL=postgres://... go run ./scripts/locktime [-n 1000000] [-timeout 30m]
//
// (or, with a throwaway server: bin/withpg -- go run ./scripts/locktime).
// On the server of DATABASE_URL, a postgres:// URL that lib/pq accepts,
// it creates a scratch database (dropped at the end), applies the first
// migration, seeds n users in one statement, and then applies the other
// migrations one at a time, as "users migrate up" would, while probes
// play the previous release still serving: every 5 ms a write (UPDATE of
// a random user), a read (SELECT of one) and a first login (an INSERT
// naming no username), each on a connection of its own and with no
// lock_timeout, so that a probe waits as long as a lock keeps it out. It
// prints each migration's duration, the longest any probe took during it
// and the probes that failed, and the statements a probe was seen waiting
// on a lock for. Measured on a machine of one's own, never in CI.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	mathrand "math/rand/v2"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"
	_ "github.com/amacneil/dbmate/v2/pkg/driver/postgres" // registers the postgres:// scheme
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agynio/users/sql/migrations"
)

// probeEvery is how often each probe runs: often enough that a stall of
// a few milliseconds shows.
const probeEvery = 5 * time.Millisecond

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "locktime:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("locktime", flag.ContinueOnError)
	n := flags.Int("n", 1_000_000, "users to seed")
	timeout := flags.Duration("timeout", 30*time.Minute, "give up after this long")
	if err := flags.Parse(args); err != nil {
		return err
	}
	serverURL := os.Getenv("DATABASE_URL")
	if serverURL == "" {
		return errors.New("DATABASE_URL is not set")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// The scratch database.
	dbURL, drop, err := createDatabase(ctx, serverURL)
	if err != nil {
		return err
	}
	defer drop()
	poolCfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return err
	}
	poolCfg.MaxConns = 8 // a connection for each probe and the lock watcher, and to spare
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	// The previous release's table, full.
	versions, err := migrationVersions()
	if err != nil {
		return err
	}
	if _, err := apply(dbURL, versions[0]); err != nil {
		return err
	}
	start := time.Now()
	if err := seed(ctx, pool, *n); err != nil {
		return err
	}
	fmt.Printf("seeded %d users in %s\n", *n, time.Since(start).Round(time.Millisecond))
	ids, err := sampleIDs(ctx, pool)
	if err != nil {
		return err
	}

	// The other migrations, one at a time, under the probes.
	probeCtx, stopProbes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var rec recorder
	for _, p := range probes(ids) {
		wg.Go(func() { rec.probe(probeCtx, pool, p) })
	}
	wg.Go(func() { rec.watchLockWaits(probeCtx, pool) })
	type window struct {
		version    string
		start, end time.Time
	}
	var windows []window
	for _, v := range versions[1:] {
		time.Sleep(200 * time.Millisecond) // a quiet gap: each stall falls in one migration
		took, err := apply(dbURL, v)
		if err != nil {
			stopProbes()
			wg.Wait()
			return fmt.Errorf("migration %s: %w", v, err)
		}
		windows = append(windows, window{v, took.start, took.end})
	}
	time.Sleep(200 * time.Millisecond)
	stopProbes()
	wg.Wait()
	if rec.err != nil {
		return rec.err
	}

	fmt.Printf("\n%-16s %12s   longest probe (write, read, login)   probes  failed\n", "migration", "duration")
	for _, w := range windows {
		longest, count, errs := rec.longestDuring(w.start, w.end)
		fmt.Printf("%-16s %12s   %-34s %6d  %6d\n", w.version, w.end.Sub(w.start).Round(time.Millisecond), formatLongest(longest), count, len(errs))
	}
	longest, count, errs := rec.longestDuring(time.Time{}, time.Now())
	fmt.Printf("%-16s %12s   %-34s %6d  %6d\n", "overall", "", formatLongest(longest), count, len(errs))
	if len(errs) > 0 {
		fmt.Println("\nfailed probes:")
		for _, e := range errs {
			fmt.Println("  " + e)
		}
	}

	fmt.Println("\nlock waits seen (longest first):")
	for _, w := range rec.lockWaits() {
		fmt.Printf("  %8s  %s\n            waiting on: %s\n", w.waited.Round(time.Millisecond), w.waiter, w.blocker)
	}
	return nil
}

// createDatabase creates a scratch database on the server of serverURL
// and returns its URL and a func that drops it.
func createDatabase(ctx context.Context, serverURL string) (string, func(), error) {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", nil, err
	}
	b := make([]byte, 6)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails
	name := "users_locktime_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		admin.Close(ctx)
		return "", nil, err
	}
	drop := func() {
		ctx := context.Background()
		admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)") //nolint:errcheck // best effort
		admin.Close(ctx)
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		drop()
		return "", nil, err
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

func migrationVersions() ([]string, error) {
	files, err := fs.Glob(migrations.FS, "*.sql")
	var versions []string
	for _, f := range files {
		v, _, _ := strings.Cut(f, "_")
		versions = append(versions, v)
	}
	return versions, err
}

type span struct{ start, end time.Time }

// apply applies the migrations up to and including version through
// dbmate, as "users migrate up" does, and says when it ran.
func apply(dbURL, version string) (span, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return span{}, err
	}
	m := dbmate.New(u)
	m.FS = upTo{migrations.FS, version}
	m.MigrationsDir = []string{"."}
	m.AutoDumpSchema = false
	m.Log = io.Discard
	s := span{start: time.Now()}
	err = m.Migrate()
	s.end = time.Now()
	return s, err
}

// upTo shows dbmate the migration files up to version only.
type upTo struct {
	fs.FS
	version string
}

func (f upTo) ReadDir(name string) ([]fs.DirEntry, error) {
	entries, err := fs.ReadDir(f.FS, name)
	return slices.DeleteFunc(entries, func(e fs.DirEntry) bool {
		v, _, _ := strings.Cut(e.Name(), "_")
		return v > f.version // fixed-width timestamps compare as strings
	}), err
}

// seed fills the previous release's table: emails shared by about three
// users each, so that usernames collide as in a real directory; created_at
// spread over three years; then VACUUM ANALYZE, as autovacuum would have
// done on a live table.
func seed(ctx context.Context, pool *pgxpool.Pool, n int) error {
	_, err := pool.Exec(ctx, `
		INSERT INTO users (identity_id, oidc_subject, name, email, photo_url, created_at, updated_at)
		SELECT gen_random_uuid(), 'subject-' || g, 'User ' || g, 'user' || (g % ($1::int / 3 + 1)) || '@example.com',
		       'https://example.com/' || g || '.png', t, t
		FROM (SELECT g, now() - random() * interval '3 years' AS t FROM generate_series(1, $1::int) g) s`, n)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	_, err = pool.Exec(ctx, "VACUUM ANALYZE users")
	return err
}

func sampleIDs(ctx context.Context, pool *pgxpool.Pool) ([]uuid.UUID, error) {
	rows, err := pool.Query(ctx, "SELECT identity_id FROM users TABLESAMPLE SYSTEM (1) LIMIT 10000")
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err == nil && len(ids) == 0 {
		err = errors.New("no users to probe")
	}
	return ids, err
}

// A probe is one of the previous release's statements, run again and
// again. kind indexes recorder's figures.
type probe struct {
	kind int
	sql  string
	args func() []any
}

const (
	write = iota
	read
	login
	kinds
)

var kindNames = [kinds]string{"write", "read", "login"}

func probes(ids []uuid.UUID) []probe {
	randomID := func() []any { return []any{ids[mathrand.IntN(len(ids))]} }
	return []probe{
		{write, "UPDATE users SET name = name WHERE identity_id = $1", randomID},
		{read, "SELECT identity_id, oidc_subject, name, email, photo_url, created_at, updated_at FROM users WHERE identity_id = $1", randomID},
		{login, "INSERT INTO users (identity_id, oidc_subject, name, email, photo_url) VALUES ($1, $2, 'Probe', $3, '')", func() []any {
			id := uuid.New()
			return []any{id, "probe-" + id.String(), "probe." + id.String()[:8] + "@example.com"}
		}},
	}
}

type timing struct {
	kind       int
	start, end time.Time
	err        error
}

type lockWait struct {
	waiter, blocker string
	waited          time.Duration
}

// recorder keeps what the probes saw.
type recorder struct {
	mu      sync.Mutex
	timings []timing
	waits   map[[2]string]time.Duration // longest wait by (waiter, blocker)
	err     error
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = cmp.Or(r.err, err)
}

// probe runs p every probeEvery on a connection of its own until ctx
// ends. A probe that waits runs late: the next starts when it is done.
func (r *recorder) probe(ctx context.Context, pool *pgxpool.Pool, p probe) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		r.fail(err)
		return
	}
	defer conn.Release()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		start := time.Now()
		_, err := conn.Exec(ctx, p.sql, p.args()...)
		end := time.Now()
		if ctx.Err() != nil {
			return
		}
		// A failed probe is a failed call of the previous release's:
		// counted and shown, and its time counts as a stall.
		r.mu.Lock()
		r.timings = append(r.timings, timing{p.kind, start, end, err})
		r.mu.Unlock()
	}
}

// watchLockWaits notes, every 20 ms, which statements wait on a lock and
// which statements hold them up.
func (r *recorder) watchLockWaits(ctx context.Context, pool *pgxpool.Pool) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rows, err := pool.Query(ctx, `
			SELECT w.query, b.query, extract(epoch FROM clock_timestamp() - w.query_start)::float8
			FROM pg_stat_activity w
			CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
			JOIN pg_stat_activity b ON b.pid = blocking.pid
			WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'`)
		if err != nil {
			if ctx.Err() == nil {
				r.fail(fmt.Errorf("watch lock waits: %w", err))
			}
			return
		}
		var waiter, blocker string
		var seconds float64
		_, err = pgx.ForEachRow(rows, []any{&waiter, &blocker, &seconds}, func() error {
			key := [2]string{oneLine(waiter), oneLine(blocker)}
			r.mu.Lock()
			if r.waits == nil {
				r.waits = map[[2]string]time.Duration{}
			}
			r.waits[key] = max(r.waits[key], time.Duration(seconds*float64(time.Second)))
			r.mu.Unlock()
			return nil
		})
		if err != nil && ctx.Err() == nil {
			r.fail(fmt.Errorf("watch lock waits: %w", err))
			return
		}
	}
}

// longestDuring returns, for each kind of probe, the longest one that ran
// at some time from start to end, how many probes did, and the errors of
// those that failed.
func (r *recorder) longestDuring(start, end time.Time) ([kinds]time.Duration, int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var longest [kinds]time.Duration
	count := 0
	var errs []string
	for _, t := range r.timings {
		if t.end.Before(start) || t.start.After(end) {
			continue
		}
		count++
		longest[t.kind] = max(longest[t.kind], t.end.Sub(t.start))
		if t.err != nil {
			errs = append(errs, fmt.Sprintf("%s probe after %s: %v", kindNames[t.kind], t.end.Sub(t.start).Round(time.Millisecond), t.err))
		}
	}
	return longest, count, errs
}

func (r *recorder) lockWaits() []lockWait {
	r.mu.Lock()
	defer r.mu.Unlock()
	var waits []lockWait
	for k, d := range r.waits {
		waits = append(waits, lockWait{k[0], k[1], d})
	}
	slices.SortFunc(waits, func(a, b lockWait) int { return int(b.waited - a.waited) })
	return waits
}

func formatLongest(l [kinds]time.Duration) string {
	parts := make([]string, kinds)
	for i, d := range l {
		parts[i] = d.Round(100 * time.Microsecond).String()
	}
	return strings.Join(parts, ", ")
}

// oneLine squeezes a statement's whitespace, and cuts it, for the report.
func oneLine(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
