package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/migrate"
	"github.com/agynio/users/internal/testing/pgtest"
)

// database is the PostgreSQL the bench runs against: a database of its
// own, created for the run and dropped after it, on a throwaway server or
// on the server of DATABASE_URL.
type database struct {
	URL      string // the bench's database
	Describe string // the server, for a person
	Version  string
	Settings map[string]string // the server settings that bear on the figures
	// Postmaster is the server's main process, if it runs on this machine
	// where we can see its CPU time, else 0.
	Postmaster int

	server string   // the server's URL, through which databases are made
	name   string   // the bench's database
	stops  []func() // what Close undoes, in the order it was done
}

// Close drops the bench's databases and stops a throwaway server.
func (d *database) Close() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
}

// serverSettings sizes a throwaway server for n users the way a production
// server for that table would be: shared_buffers holds the whole table and
// its indexes (about 220 bytes a user, with room for the rows the run adds),
// in each of the copies of the database the run uses (the events-on
// service's is the second, events.go), so that neither service reads what
// the other's runs evicted; and commits are durable again, as pgtest's
// test defaults are not, since UpdateUser and first logins are bound by
// them.
func serverSettings(n int64, copies int) []string {
	const mb = 1 << 20
	buffers := 128*mb + int64(copies)*n*320
	if total := memTotal(); total > 0 {
		buffers = min(buffers, total/4)
	}
	return []string{
		"shared_buffers=" + strconv.FormatInt(buffers/mb, 10) + "MB",
		"fsync=on", "synchronous_commit=on", "full_page_writes=on",
		// No checkpoint forced by WAL volume during the seed or the run.
		"max_wal_size=8GB",
	}
}

// reportedSettings are shown with the results.
var reportedSettings = []string{"shared_buffers", "max_connections", "fsync", "synchronous_commit", "full_page_writes", "max_wal_size"}

// openDatabase starts a throwaway server sized for copies of a database
// of n users, or uses the server of serverURL if it is set, and creates
// and migrates a database for the run.
func openDatabase(ctx context.Context, serverURL string, n int64, copies int, log io.Writer) (_ *database, err error) {
	d := &database{Describe: "DATABASE_URL", Settings: map[string]string{}}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	if serverURL == "" {
		srv, err := pgtest.Start(ctx, log, serverSettings(n, copies)...)
		if err != nil {
			return nil, err
		}
		d.stops = append(d.stops, func() { srv.Close() })
		serverURL, d.Describe = srv.URL, "throwaway, "+srv.Describe()
	}
	d.server = serverURL

	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	d.name = "users_bench_" + randomHex(6)
	if d.URL, err = d.create(ctx, admin, d.name, ""); err != nil {
		return nil, fmt.Errorf("create the bench database (the role needs CREATEDB): %w", err)
	}

	var backend int
	if err := admin.QueryRow(ctx, "SELECT current_setting('server_version'), pg_backend_pid()").Scan(&d.Version, &backend); err != nil {
		return nil, err
	}
	d.Postmaster = postmasterOf(backend)
	for _, s := range reportedSettings {
		var v string
		if err := admin.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err != nil {
			return nil, err
		}
		d.Settings[s] = v
	}
	if err := migrate.Up(ctx, d.URL, io.Discard); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return d, nil
}

// create makes database name on the server, a copy of template if that
// is set, to be dropped on Close, and returns its URL.
func (d *database) create(ctx context.Context, admin *pgx.Conn, name, template string) (string, error) {
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := admin.Exec(ctx, stmt); err != nil {
		return "", err
	}
	server := d.server
	d.stops = append(d.stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)") //nolint:errcheck // a leftover database is harmless
	})
	return withDatabase(d.server, name)
}

// copyOf makes a copy of the bench's database as it stands, seeded and
// vacuumed alike, and returns its URL; the copy is dropped on Close.
// PostgreSQL copies a database only while no other session is connected
// to it: call it before any server starts. A checkpoint then writes the
// copy out, now rather than during a workload.
func (d *database) copyOf(ctx context.Context, suffix string) (string, error) {
	admin, err := pgx.Connect(ctx, d.server)
	if err != nil {
		return "", fmt.Errorf("database: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	copyURL, err := d.create(ctx, admin, d.name+"_"+suffix, d.name)
	if err != nil {
		return "", fmt.Errorf("copy the bench database: %w", err)
	}
	if _, err := admin.Exec(ctx, "CHECKPOINT"); err != nil {
		return "", fmt.Errorf("CHECKPOINT: %w", err)
	}
	return copyURL, nil
}

// seed inserts users 1..n in one statement and the first tokenHolders
// users' API tokens in another, then readies the tables as long-lived
// ones would be: VACUUM sets the hint bits and the visibility map (else
// the first reader of each row would write its page, during whichever
// workload came first), ANALYZE gives the planner statistics, and a
// checkpoint writes the seed out now rather than during a workload.
func seed(ctx context.Context, dbURL string, n int64) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, seedSQL, n); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if _, err := conn.Exec(ctx, tokenSeedSQL, min(n, tokenHolders)); err != nil {
		return fmt.Errorf("seed API tokens: %w", err)
	}
	for _, stmt := range []string{"VACUUM (ANALYZE) users, api_tokens", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return nil
}

// withDatabase returns rawURL pointing at database name instead.
func withDatabase(rawURL, name string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("DATABASE_URL must be a postgres:// URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// withoutPoolSettings returns rawURL without the settings that only pgx
// understands, for libpq (pgbench).
func withoutPoolSettings(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") || k == "statement_cache_capacity" || k == "description_cache_capacity" || k == "default_query_exec_mode" {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// withQuery returns rawURL with the query settings in extra (k=v&...)
// added.
func withQuery(rawURL, extra string) (string, error) {
	if extra == "" {
		return rawURL, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	add, err := url.ParseQuery(extra)
	if err != nil {
		return "", fmt.Errorf("-service-db-params: %w", err)
	}
	q := u.Query()
	for k, vs := range add {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
