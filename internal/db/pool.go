package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// DefaultConnectTimeout bounds a connection attempt when DATABASE_URL sets
// no connect_timeout. pgx's own default is none: an unreachable database
// host would hold a call until the operating system gives up on the TCP
// handshake, minutes later, instead of failing fast with UNAVAILABLE.
const DefaultConnectTimeout = 2 * time.Second

// PoolOptions are what the service adds to the pool settings in the URL.
type PoolOptions struct {
	// Tracer, if not nil, sees every statement (OpenTelemetry spans).
	Tracer pgx.QueryTracer
	// MaxConns, if not zero, replaces both pgxpool's default and any
	// pool_max_conns in the URL.
	MaxConns int32
}

// NewPool returns a pool for url, its connections set up by ConfigureConn,
// with pool_max_conns DefaultMaxConns where the URL sets none; opts.MaxConns
// wins over both. The pool connects lazily.
func NewPool(ctx context.Context, url string, opts PoolOptions) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	ConfigureConn(cfg.ConnConfig)
	setsMaxConns, err := setsPoolMaxConns(url)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if !setsMaxConns {
		cfg.MaxConns = DefaultMaxConns
	}
	if opts.MaxConns != 0 {
		cfg.MaxConns = opts.MaxConns
		cfg.MinConns = min(cfg.MinConns, cfg.MaxConns)
	}
	cfg.ConnConfig.Tracer = opts.Tracer
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		registerUUID(conn)
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return pool, nil
}

// Connect opens one connection to url, outside any pool, set up as the
// pool's are: for a session that must outlive its statements, such as
// the one that holds the event relay's advisory lock. The server probes
// the session when it is idle for sessionKeepalive and gives up after
// three unanswered probes: a session whose client vanished with its node
// (no FIN, no RST) ends, and its locks go, within about 25 s, not after
// the operating system's default of over two hours.
func Connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgxpool.ParseConfig(url) // pool_* settings are the pool's, not the server's
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	ConfigureConn(cfg.ConnConfig)
	for name, value := range map[string]string{
		"tcp_keepalives_idle":     "10",
		"tcp_keepalives_interval": "5",
		"tcp_keepalives_count":    "3",
	} {
		if _, set := cfg.ConnConfig.RuntimeParams[name]; !set { // the URL's own win
			cfg.ConnConfig.RuntimeParams[name] = value
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	registerUUID(conn)
	return conn, nil
}

// registerUUID sends and reads uuid.UUID in PostgreSQL's binary form.
// Without this pgx takes the driver.Valuer path: format as text, fail to
// encode that as binary, parse it back; a third of a 100-id batch's CPU.
func registerUUID(conn *pgx.Conn) {
	pgxuuid.Register(conn.TypeMap())
	conn.TypeMap().RegisterType(&pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: uuidCodec{}})
}

// setsPoolMaxConns reports whether connString sets pool_max_conns, read as
// pgxpool.ParseConfig reads it. pgxpool deletes the setting once it has
// used it and leaves no way to tell its own default from a value in the
// URL; pgconn, which it parses with, keeps every setting it does not know
// among the RuntimeParams. Parsing, not a search of the text, because the
// name may appear as a value (application_name=pool_max_conns) or in a
// password, and because pgconn also reads a service file (PGSERVICE).
func setsPoolMaxConns(connString string) (bool, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return false, err
	}
	_, ok := cfg.RuntimeParams["pool_max_conns"]
	return ok, nil
}

// DefaultMaxConns is the pool size when neither DATABASE_URL nor
// PoolOptions sets one. pgxpool's own default, max(4, CPUs), keeps too few
// statements in flight for the database to group commits: writes would
// queue for a connection while PostgreSQL waits on one fsync at a time.
// It is fixed, not drawn from the node's CPUs: the database's connection
// limit is shared by every replica, and a pod scheduled on a large node
// must not claim more of it than one on a small node.
const DefaultMaxConns = 16

// uuidCodec is pgx-google-uuid's codec, which also scans a binary uuid
// straight into a uuid.UUID. pgx-google-uuid does that with a scan
// wrapper, but pgx tries a target's sql.Scanner first, and uuid.UUID is
// one: every uuid read went through its text form, formatted by the codec
// and parsed back by uuid.Parse.
type uuidCodec struct{ pgxuuid.UUIDCodec }

func (c uuidCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if _, ok := target.(*uuid.UUID); ok && format == pgtype.BinaryFormatCode {
		return scanBinaryUUID{}
	}
	return c.UUIDCodec.PlanScan(m, oid, format, target)
}

// scanBinaryUUID copies the 16 bytes. NULL is an error, where uuid.UUID's
// own Scan would leave the nil UUID: a nullable column is read into a
// *uuid.UUID, which pgx sets to nil for NULL before a scan plan runs.
type scanBinaryUUID struct{}

func (scanBinaryUUID) Scan(src []byte, dst any) error {
	if src == nil {
		return errors.New("cannot scan NULL into *uuid.UUID")
	}
	if len(src) != len(uuid.UUID{}) {
		return fmt.Errorf("a binary uuid has 16 bytes, got %d", len(src))
	}
	copy(dst.(*uuid.UUID)[:], src)
	return nil
}
