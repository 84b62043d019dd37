// Package config reads the service's configuration from the environment,
// once, at start-up, through one table of the variables (Variables) that
// "users -h" and the README document too. Every error names the variable
// that caused it.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Config is everything the service reads from its environment.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string. pgxpool settings such
	// as pool_max_conns ride in its query string.
	DatabaseURL string
	// GRPCAddress is the host:port the gRPC server listens on.
	GRPCAddress string
	// ShutdownTimeout bounds how long in-flight RPCs may drain after
	// SIGINT/SIGTERM before they are cut off.
	ShutdownTimeout time.Duration
	// DrainDelay is how long the server keeps accepting calls after
	// SIGINT/SIGTERM has turned health NOT_SERVING, before the drain
	// starts: the time load balancers and endpoints take to stop sending.
	DrainDelay time.Duration
	// AdminAddress is the host:port of the admin HTTP listener (/healthz,
	// /readyz, /metrics), apart from gRPC so that it is never exposed to
	// the service's clients by accident.
	AdminAddress string
	// LogLevel is the lowest level logged.
	LogLevel slog.Level
	// DBTimeout bounds every database call, waiting for a connection
	// included; the caller's deadline wins when it is earlier.
	DBTimeout time.Duration
	// DBMaxConns, when not zero, is the size of the service's connection
	// pool, replacing any pool_max_conns in DatabaseURL.
	DBMaxConns int32
	// ServeRole, when set, is the PostgreSQL role serve connects as:
	// "users migrate up" grants it exactly the privileges serve's queries
	// need (sql/grants.sql), so that a release's new table is granted in
	// the same step that creates it.
	ServeRole string
	// DBReadsInFlight is how many point reads of one kind run at once
	// before further ones are coalesced into one statement: at least 1,
	// Variables' default when unset.
	DBReadsInFlight int
	// TLS is the gRPC listener's TLS; the zero value is plaintext.
	TLS TLS
	// ClusterAdminSubjects are the OIDC subjects that are cluster
	// administrators whatever the database says.
	ClusterAdminSubjects []string
	// IdentityAssertingClients are the client-certificate SANs (DNS or
	// URI) that may name the caller in x-identity-id. Set only under
	// mutual TLS.
	IdentityAssertingClients []string
	// Tracing is on when an OTLP endpoint is configured; the exporter
	// reads the rest of the standard OTEL_* variables itself.
	Tracing bool
	// Events is where the change events go.
	Events Events
}

// Events configures the change events: the relay to NATS JetStream when
// NATSURL is set, else the outbox's pruning.
type Events struct {
	// NATSURL is the NATS server(s), comma-separated; empty turns the
	// relay off.
	NATSURL string
	// NATSCredsFile, when set, is a NATS credentials file (a user JWT and
	// its seed) to connect with.
	NATSCredsFile string
	// Stream is the JetStream stream's name, and StreamMaxAge how long it
	// keeps an event, when the relay creates it.
	Stream       string
	StreamMaxAge time.Duration
	// OutboxRetention is how long an event waits in the outbox with the
	// relay off before it is deleted.
	OutboxRetention time.Duration
}

// Relay reports whether events are relayed to NATS.
func (e Events) Relay() bool { return e.NATSURL != "" }

// TLS names the PEM files of the gRPC listener's TLS. They are re-read
// while the service runs, so that a rotated certificate is served without
// a restart.
type TLS struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, turns on mutual TLS: a client must present a
	// certificate signed by one of these CAs.
	ClientCAFile string
}

// Enabled reports whether the gRPC listener serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Error is a configuration error, made by Errorf; the program exits with
// code 2 on one. Its text is "VARIABLE: reason".
type Error struct {
	Variable string
	Reason   string
}

func (e *Error) Error() string { return e.Variable + ": " + e.Reason }

// Errorf returns the configuration error of variable, its reason formatted
// as by fmt.Sprintf. It is the one way such an error is made: by Load, and
// by what can only check a setting later, such as grpctls reading the TLS
// files.
func Errorf(variable, format string, args ...any) error {
	return &Error{Variable: variable, Reason: fmt.Sprintf(format, args...)}
}

// IsError reports whether err is (or wraps) a configuration error.
func IsError(err error) bool {
	var ce *Error
	return errors.As(err, &ce)
}

// Load reads and validates the configuration through getenv (os.Getenv in
// production, a map in tests): the variables of Variables, and no other,
// an unset one as its default.
func Load(getenv func(string) string) (Config, error) {
	env := environment(getenv)
	cfg := Config{
		DatabaseURL:  env.get("DATABASE_URL"),
		ServeRole:    env.get("DB_SERVE_ROLE"),
		GRPCAddress:  env.get("GRPC_ADDRESS"),
		AdminAddress: env.get("ADMIN_ADDRESS"),
		TLS: TLS{
			CertFile:     env.get("GRPC_TLS_CERT_FILE"),
			KeyFile:      env.get("GRPC_TLS_KEY_FILE"),
			ClientCAFile: env.get("GRPC_TLS_CLIENT_CA_FILE"),
		},
		Tracing: env.get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "",
		Events: Events{
			NATSURL:       strings.TrimSpace(env.get("NATS_URL")),
			NATSCredsFile: env.get("NATS_CREDS_FILE"),
			Stream:        env.get("NATS_STREAM"),
		},
	}

	if cfg.DatabaseURL == "" {
		return Config{}, Errorf("DATABASE_URL", "is required (e.g. postgres://user:pass@host:5432/users)")
	}
	// Parse with pgxpool's own parser so that a bad pool_* setting fails
	// here rather than at the first query. pgconn masks the password in the
	// message (a test holds it to that).
	if _, err := pgxpool.ParseConfig(cfg.DatabaseURL); err != nil {
		return Config{}, Errorf("DATABASE_URL", "is not a valid PostgreSQL connection string: %v", err)
	}

	for _, a := range []struct{ variable, addr string }{{"GRPC_ADDRESS", cfg.GRPCAddress}, {"ADMIN_ADDRESS", cfg.AdminAddress}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return Config{}, Errorf(a.variable, "%q is not host:port", a.addr)
		}
	}

	var err error
	if cfg.ShutdownTimeout, err = env.nonNegativeDuration("SHUTDOWN_TIMEOUT", "20s"); err != nil {
		return Config{}, err
	}
	if cfg.DrainDelay, err = env.nonNegativeDuration("DRAIN_DELAY", "5s"); err != nil {
		return Config{}, err
	}
	maxConns, err := env.count("DB_MAX_CONNS", "16")
	if err != nil {
		return Config{}, err
	}
	cfg.DBMaxConns = int32(maxConns)
	if cfg.DBReadsInFlight, err = env.count("DB_READS_IN_FLIGHT", "2"); err != nil {
		return Config{}, err
	}
	if cfg.DBTimeout, err = env.positiveDuration("DB_TIMEOUT", "5s"); err != nil {
		return Config{}, err
	}
	if err := loadEvents(&cfg.Events, env); err != nil {
		return Config{}, err
	}
	if v := env.get("LOG_LEVEL"); cfg.LogLevel.UnmarshalText([]byte(v)) != nil {
		return Config{}, Errorf("LOG_LEVEL", "%q is not one of debug, info, warn, error", v)
	}

	subjects, err := list("CLUSTER_ADMIN_SUBJECTS", env.get("CLUSTER_ADMIN_SUBJECTS"))
	if err != nil {
		return Config{}, err
	}
	for _, s := range subjects {
		if n := utf8.RuneCountInString(s); n > 255 {
			return Config{}, Errorf("CLUSTER_ADMIN_SUBJECTS", "a subject is %d characters long; OpenID Connect subjects have at most 255", n)
		}
	}
	cfg.ClusterAdminSubjects = subjects
	if cfg.IdentityAssertingClients, err = list("IDENTITY_ASSERTING_CLIENTS", env.get("IDENTITY_ASSERTING_CLIENTS")); err != nil {
		return Config{}, err
	}
	if len(cfg.IdentityAssertingClients) > 0 && cfg.TLS.ClientCAFile == "" {
		return Config{}, Errorf("IDENTITY_ASSERTING_CLIENTS", "needs mutual TLS (GRPC_TLS_CLIENT_CA_FILE): without client certificates the service cannot tell its clients apart")
	}

	switch t := cfg.TLS; {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return Config{}, Errorf("GRPC_TLS_CERT_FILE", "and GRPC_TLS_KEY_FILE must be set together")
	case t.ClientCAFile != "" && t.CertFile == "":
		return Config{}, Errorf("GRPC_TLS_CLIENT_CA_FILE", "needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE: mutual TLS is TLS first")
	}
	return cfg, nil
}

// loadEvents checks and reads the events' optional variables.
func loadEvents(e *Events, env environment) error {
	// JetStream's rule for a stream name: no spaces, dots, wildcards or
	// path separators.
	if strings.ContainsAny(e.Stream, " \t\r\n.*>/\\") {
		return Errorf("NATS_STREAM", "%q is not a JetStream stream name: it may not hold spaces, '.', '*', '>', '/' or '\\'", e.Stream)
	}
	var err error
	if e.StreamMaxAge, err = env.positiveDuration("NATS_STREAM_MAX_AGE", "168h"); err != nil {
		return err
	}
	if e.OutboxRetention, err = env.positiveDuration("OUTBOX_RETENTION", "24h"); err != nil {
		return err
	}
	if e.NATSCredsFile != "" && e.NATSURL == "" {
		return Errorf("NATS_CREDS_FILE", "needs NATS_URL: with no NATS server, events are not relayed")
	}
	return nil
}

// list splits a comma-separated value, trimming spaces around each entry;
// an empty entry ("a,,b", or a trailing comma) is an error, as it is most
// likely a typo.
func list(variable, value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	parts := strings.Split(value, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
		if parts[i] == "" {
			return nil, Errorf(variable, "entry %d of the comma-separated list is empty", i+1)
		}
	}
	return parts, nil
}
