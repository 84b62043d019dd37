// Package config reads the service's configuration from the environment,
// once, at start-up. Every error names the variable that caused it.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"time"

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
}

// Error is a configuration error; the program exits with code 2 on one.
type Error struct {
	Variable string
	Reason   string
}

func (e *Error) Error() string { return e.Variable + ": " + e.Reason }

// IsError reports whether err is (or wraps) a configuration error.
func IsError(err error) bool {
	var ce *Error
	return errors.As(err, &ce)
}

// Defaults for the optional variables.
const (
	DefaultGRPCAddress     = ":50051"
	DefaultShutdownTimeout = 20 * time.Second
)

// Load reads and validates the configuration through getenv (os.Getenv in
// production, a map in tests).
func Load(getenv func(string) string) (Config, error) {
	cfg := Config{
		DatabaseURL:     getenv("DATABASE_URL"),
		GRPCAddress:     cmp.Or(getenv("GRPC_ADDRESS"), DefaultGRPCAddress),
		ShutdownTimeout: DefaultShutdownTimeout,
	}

	if cfg.DatabaseURL == "" {
		return Config{}, &Error{"DATABASE_URL", "is required (e.g. postgres://user:pass@host:5432/users)"}
	}
	// Parse with pgxpool's own parser so that a bad pool_* setting fails
	// here rather than at the first query. pgconn masks the password in the
	// message (a test holds it to that).
	if _, err := pgxpool.ParseConfig(cfg.DatabaseURL); err != nil {
		return Config{}, &Error{"DATABASE_URL", "is not a valid PostgreSQL connection string: " + err.Error()}
	}

	if _, _, err := net.SplitHostPort(cfg.GRPCAddress); err != nil {
		return Config{}, &Error{"GRPC_ADDRESS", fmt.Sprintf("%q is not host:port", cfg.GRPCAddress)}
	}

	if v := getenv("SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return Config{}, &Error{"SHUTDOWN_TIMEOUT", fmt.Sprintf("%q is not a non-negative duration (e.g. 20s)", v)}
		}
		cfg.ShutdownTimeout = d
	}
	return cfg, nil
}
