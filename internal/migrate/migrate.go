// Package migrate applies the embedded dbmate migrations, serialized across
// processes by a PostgreSQL advisory lock.
package migrate

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"
	_ "github.com/amacneil/dbmate/v2/pkg/driver/postgres" // registers the postgres:// scheme
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lib/pq"

	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/sql/migrations"
)

// lockKey identifies the advisory lock held while migrating. dbmate takes no
// lock of its own, so without it two replicas running "migrate up" together
// would both see a migration as pending and both try to apply it.
// The value is arbitrary but fixed for good: were it to change, an old and a
// new release could migrate at the same time.
const lockKey int64 = 0x3b1f5f2c6a4e7d01

// Up applies every pending migration.
func Up(ctx context.Context, databaseURL string, log io.Writer) error {
	return UpAndGrant(ctx, databaseURL, "", log)
}

// UpAndGrant applies every pending migration and then, unless serveRole
// is empty, grants serveRole (DB_SERVE_ROLE) exactly the privileges of
// sql/grants.sql, so that a table a release adds is granted in the same
// run that creates it. Each run grants again, so that the role holds
// what the running release's file says, whatever was granted before;
// except on a newer release's schema (an older release's Job, run by a
// rollback or an Argo CD sync back), whose grants the newer release's
// own statements and triggers may need: those are left in place, and
// log says so. The role is checked before anything is migrated.
func UpAndGrant(ctx context.Context, databaseURL, serveRole string, log io.Writer) error {
	return withLock(ctx, databaseURL, log, nil, func(m *dbmate.DB, conn *pgx.Conn) error {
		if serveRole != "" {
			if err := checkServeRole(ctx, conn, serveRole); err != nil {
				return err
			}
		}
		if err := m.Migrate(); err != nil {
			return err
		}
		if serveRole == "" {
			return nil
		}
		newer, err := newerVersions(ctx, conn)
		if err != nil {
			return err
		}
		if len(newer) > 0 {
			fmt.Fprintf(log, "Grants of DB_SERVE_ROLE %q left as they are: the schema is a newer release's (migrations %s, which this release does not have)\n", //nolint:errcheck // progress output
				serveRole, strings.Join(newer, ", "))
			return nil
		}
		return grant(ctx, conn, serveRole)
	})
}

// ErrDataLoss is why Down refused to roll back: the down migration would
// have deleted data (rows of the table it drops), and nothing was changed.
var ErrDataLoss = errors.New("rollback refused: it would delete data")

// dataLossCode is the SQLSTATE a down migration raises when it refuses to
// delete data (see sql/migrations), unless allowDataLoss is on.
const dataLossCode = "UD001"

// allowDataLoss is the session setting that lets a down migration delete
// data.
const allowDataLoss = "users.allow_data_loss"

// Down rolls back the most recent migration, unless that would delete
// data: then it returns ErrDataLoss and leaves the database as it was.
func Down(ctx context.Context, databaseURL string, log io.Writer) error {
	return down(ctx, databaseURL, log, nil)
}

// ForceDown rolls back the most recent migration even if that deletes
// data: it sets allowDataLoss for the migration's session.
func ForceDown(ctx context.Context, databaseURL string, log io.Writer) error {
	return down(ctx, databaseURL, log, map[string]string{allowDataLoss: "on"})
}

func down(ctx context.Context, databaseURL string, log io.Writer, session map[string]string) error {
	var out bytes.Buffer
	err := withLock(ctx, databaseURL, &out, session, func(m *dbmate.DB, _ *pgx.Conn) error { return m.Rollback() })
	// dbmate reports "Rolled back: <file>" even when the rollback failed.
	for line := range strings.Lines(out.String()) {
		if err == nil || !strings.HasPrefix(line, "Rolled back: ") {
			io.WriteString(log, line) //nolint:errcheck // progress output
		}
	}
	// dbmate wraps the server's error without Unwrap.
	var queryErr *dbmate.QueryError
	var pqErr *pq.Error
	if errors.As(err, &queryErr) && errors.As(queryErr.Err, &pqErr) && pqErr.Code == dataLossCode {
		return fmt.Errorf("%w (%s); nothing was rolled back", ErrDataLoss, pqErr.Message)
	}
	return err
}

// Status writes which migrations are applied and returns how many are pending.
func Status(ctx context.Context, databaseURL string, log io.Writer) (pending int, err error) {
	err = withLock(ctx, databaseURL, log, nil, func(db *dbmate.DB, _ *pgx.Conn) error {
		pending, err = db.Status(false)
		return err
	})
	return pending, err
}

// withLock runs fn while holding the migration advisory lock on a separate
// connection. The lock is session-scoped, so it is released when that
// connection closes even if this process dies half-way. session holds
// settings for the session that runs the migrations, beyond those of
// databaseURL. fn also gets the connection that holds the lock, for
// statements of migrate's own.
func withLock(ctx context.Context, databaseURL string, log io.Writer, session map[string]string, fn func(*dbmate.DB, *pgx.Conn) error) error {
	// pgxpool's parser accepts exactly what the service accepts (URL or
	// key=value, pool_* settings included) and sets the pool_* ones aside.
	poolCfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return err
	}
	// The service's connection settings: a connect timeout (without one a
	// host that never answers would hang the migration), UTF-8 text, and a
	// refusal of a database that cannot store it.
	db.ConfigureConn(poolCfg.ConnConfig)
	conn, err := pgx.ConnectConfig(ctx, poolCfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	if err := acquire(ctx, conn); err != nil {
		return fmt.Errorf("acquire migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // closing the connection releases it anyway

	tlsKey := fmt.Sprintf("users-migrate-%d", libpqTLSKeys.Add(1))
	defer pq.RegisterTLSConfig(tlsKey, nil) //nolint:errcheck // removing an entry cannot fail
	u, err := libpqURL(ctx, conn, tlsKey, session)
	if err != nil {
		return err
	}
	m := dbmate.New(u)
	m.FS = migrations.FS
	m.MigrationsDir = []string{"."}
	m.AutoDumpSchema = false // needs pg_dump, and the schema lives in sql/migrations already
	m.Log = log
	return fn(m, conn)
}

// lockPoll is how often a process waiting for another's migration asks
// for the lock again.
const lockPoll = 200 * time.Millisecond

// acquire takes the migration lock on conn, asking every lockPoll until it
// is free or ctx ends. It does not wait in pg_advisory_lock: a statement
// blocked there holds its snapshot, and CREATE INDEX CONCURRENTLY, in the
// migration of the process holding the lock, waits for every older
// snapshot to go, so the two would wait for each other through the
// clients, where PostgreSQL sees no deadlock.
func acquire(ctx context.Context, conn *pgx.Conn) error {
	for {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey).Scan(&got); err != nil {
			return err
		}
		if got {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}

// libpqTLSKeys numbers the entries this process puts in lib/pq's registry
// of TLS settings, one per migration run, so that concurrent runs with
// different settings do not overwrite each other's.
var libpqTLSKeys atomic.Int64

// libpqURL describes conn's server for dbmate, which connects through
// lib/pq. Passing DATABASE_URL on as it is would not do: lib/pq knows no
// sslmode=prefer (pgx's default) and defaults to require, does not read
// key=value strings here, and sends pgx's own settings to the server as
// unknown parameters. So the URL is rebuilt from what pgx parsed: the host
// pgx actually reached (of several, with failover), with the TLS it
// actually used, certificate checks included (see libpqTLS). session's
// settings are added to those of DATABASE_URL.
func libpqURL(ctx context.Context, conn *pgx.Conn, tlsKey string, session map[string]string) (*url.URL, error) {
	cfg := conn.Config()
	reached, err := reachedEntry(ctx, conn)
	if err != nil {
		return nil, err
	}

	q := url.Values{}
	for k, v := range cfg.RuntimeParams {
		q.Set(k, v)
	}
	for k, v := range session {
		q.Set(k, v)
	}
	if cfg.ConnectTimeout > 0 {
		q.Set("connect_timeout", strconv.Itoa(max(1, int(cfg.ConnectTimeout.Seconds()))))
	}
	if reached.TLSConfig != nil {
		if err := pq.RegisterTLSConfig(tlsKey, libpqTLS(reached.TLSConfig)); err != nil {
			return nil, err
		}
		q.Set("sslmode", "pqgo-"+tlsKey)
	} else {
		q.Set("sslmode", "disable")
	}

	u := &url.URL{
		Scheme: "postgres",
		User:   url.UserPassword(cfg.User, cfg.Password),
		Path:   "/" + cfg.Database,
	}
	if strings.HasPrefix(reached.Host, "/") { // Unix socket directory
		q.Set("host", reached.Host)
		q.Set("port", strconv.Itoa(int(reached.Port)))
	} else {
		u.Host = net.JoinHostPort(reached.Host, strconv.Itoa(int(reached.Port)))
	}
	u.RawQuery = q.Encode()
	return u, nil
}

// libpqTLS returns pgx's TLS settings c in a form lib/pq cannot change.
// lib/pq fills the registered config's RootCAs and Certificates from
// PGSSLROOTCERT, PGSSLCERT and PGSSLKEY (or ~/.postgresql), over what pgx
// took from DATABASE_URL, and an empty sslrootcert in its URL does not stop
// it: it drops empty parameters. So the server is verified here against
// pgx's roots, and pgx's certificate is offered through the callback, which
// crypto/tls prefers to Certificates: the URL wins for migrate as for serve.
func libpqTLS(c *tls.Config) *tls.Config {
	c = c.Clone()
	certs := c.Certificates
	c.GetClientCertificate = func(req *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		for i := range certs {
			if req.SupportsCertificate(&certs[i]) == nil {
				return &certs[i], nil
			}
		}
		return &tls.Certificate{}, nil
	}
	if c.InsecureSkipVerify { // pgx's own VerifyPeerCertificate, if any, holds its roots
		return c
	}
	roots, name := c.RootCAs, c.ServerName
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(s tls.ConnectionState) error {
		opts := x509.VerifyOptions{Roots: roots, DNSName: name, Intermediates: x509.NewCertPool()}
		for _, cert := range s.PeerCertificates[1:] {
			opts.Intermediates.AddCert(cert)
		}
		_, err := s.PeerCertificates[0].Verify(opts)
		return err
	}
	return c
}

// reachedEntry returns the entry of conn's configuration (the first host
// or one of its fallbacks: other hosts, other TLS modes) that conn is
// connected through, known by its address and by whether it uses TLS.
func reachedEntry(ctx context.Context, conn *pgx.Conn) (*pgconn.FallbackConfig, error) {
	cfg := conn.Config()
	netConn := conn.PgConn().Conn()
	_, usesTLS := netConn.(*tls.Conn)
	entries := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}, cfg.Fallbacks...)
	for _, e := range entries {
		if (e.TLSConfig != nil) == usesTLS && reaches(ctx, e, netConn.RemoteAddr()) {
			return e, nil
		}
	}
	return nil, fmt.Errorf("cannot tell which host of DATABASE_URL the migration connection reached (%s)", netConn.RemoteAddr())
}

// reaches reports whether entry e names the address remote.
func reaches(ctx context.Context, e *pgconn.FallbackConfig, remote net.Addr) bool {
	if strings.HasPrefix(e.Host, "/") {
		return remote.String() == fmt.Sprintf("%s/.s.PGSQL.%d", strings.TrimSuffix(e.Host, "/"), e.Port)
	}
	tcp, ok := remote.(*net.TCPAddr)
	if !ok || tcp.Port != int(e.Port) {
		return false
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, e.Host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if ip.IP.Equal(tcp.IP) {
			return true
		}
	}
	return false
}
