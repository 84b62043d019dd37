package config_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agynio/users/internal/config"
)

const databaseURL = "postgres://users:pw@db:5432/users?pool_max_conns=8"

// defaults is the configuration of an environment that sets only
// DATABASE_URL, changed by edit.
func defaults(url string, edit func(*config.Config)) config.Config {
	cfg := config.Config{
		DatabaseURL:     url,
		GRPCAddress:     ":50051",
		ShutdownTimeout: 20 * time.Second,
		AdminAddress:    ":8080",
		LogLevel:        slog.LevelInfo,
		DBTimeout:       5 * time.Second,
		DBReadsInFlight: 2,
		Events: config.Events{
			Stream:          "USERS",
			StreamMaxAge:    7 * 24 * time.Hour,
			OutboxRetention: 24 * time.Hour,
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	return cfg
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want config.Config
	}{
		{
			name: "only DATABASE_URL set gives the defaults for the rest",
			env:  map[string]string{"DATABASE_URL": databaseURL},
			want: defaults(databaseURL, nil),
		},
		{
			name: "explicit values override the defaults",
			env: map[string]string{
				"DATABASE_URL":       databaseURL,
				"GRPC_ADDRESS":       "127.0.0.1:9000",
				"SHUTDOWN_TIMEOUT":   "1m30s",
				"ADMIN_ADDRESS":      "127.0.0.1:9090",
				"LOG_LEVEL":          "DEBUG",
				"DB_TIMEOUT":         "750ms",
				"DRAIN_DELAY":        "3s",
				"DB_MAX_CONNS":       "12",
				"DB_READS_IN_FLIGHT": "3",
				"DB_SERVE_ROLE":      "users_serve",
			},
			want: defaults(databaseURL, func(c *config.Config) {
				c.GRPCAddress, c.ShutdownTimeout, c.AdminAddress = "127.0.0.1:9000", 90*time.Second, "127.0.0.1:9090"
				c.LogLevel, c.DBTimeout = slog.LevelDebug, 750*time.Millisecond
				c.DrainDelay, c.DBMaxConns, c.DBReadsInFlight = 3*time.Second, 12, 3
				c.ServeRole = "users_serve"
			}),
		},
		{
			name: "TLS files turn TLS on, a client CA mutual TLS",
			env: map[string]string{
				"DATABASE_URL":            databaseURL,
				"GRPC_TLS_CERT_FILE":      "/tls/tls.crt",
				"GRPC_TLS_KEY_FILE":       "/tls/tls.key",
				"GRPC_TLS_CLIENT_CA_FILE": "/tls/ca.crt",
			},
			want: defaults(databaseURL, func(c *config.Config) {
				c.TLS = config.TLS{CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key", ClientCAFile: "/tls/ca.crt"}
			}),
		},
		{
			name: "CLUSTER_ADMIN_SUBJECTS is a comma-separated list, spaces trimmed",
			env:  map[string]string{"DATABASE_URL": databaseURL, "CLUSTER_ADMIN_SUBJECTS": "auth0|alice, google-oauth2|1234 "},
			want: defaults(databaseURL, func(c *config.Config) {
				c.ClusterAdminSubjects = []string{"auth0|alice", "google-oauth2|1234"}
			}),
		},
		{
			name: "IDENTITY_ASSERTING_CLIENTS under mutual TLS names DNS and URI SANs",
			env: map[string]string{
				"DATABASE_URL":               databaseURL,
				"GRPC_TLS_CERT_FILE":         "/tls/tls.crt",
				"GRPC_TLS_KEY_FILE":          "/tls/tls.key",
				"GRPC_TLS_CLIENT_CA_FILE":    "/tls/ca.crt",
				"IDENTITY_ASSERTING_CLIENTS": "gateway.platform.svc,spiffe://platform/ns/gateway/sa/gateway",
			},
			want: defaults(databaseURL, func(c *config.Config) {
				c.TLS = config.TLS{CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key", ClientCAFile: "/tls/ca.crt"}
				c.IdentityAssertingClients = []string{"gateway.platform.svc", "spiffe://platform/ns/gateway/sa/gateway"}
			}),
		},
		{
			name: "an OTLP endpoint turns tracing on",
			env:  map[string]string{"DATABASE_URL": databaseURL, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
			want: defaults(databaseURL, func(c *config.Config) { c.Tracing = true }),
		},
		{
			name: "a traces-only OTLP endpoint turns tracing on",
			env:  map[string]string{"DATABASE_URL": databaseURL, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"},
			want: defaults(databaseURL, func(c *config.Config) { c.Tracing = true }),
		},
		{
			name: "an IPv6 listen address is accepted",
			env:  map[string]string{"DATABASE_URL": databaseURL, "GRPC_ADDRESS": "[::1]:50051"},
			want: defaults(databaseURL, func(c *config.Config) { c.GRPCAddress = "[::1]:50051" }),
		},
		{
			name: "a zero SHUTDOWN_TIMEOUT is accepted",
			env:  map[string]string{"DATABASE_URL": databaseURL, "SHUTDOWN_TIMEOUT": "0s"},
			want: defaults(databaseURL, func(c *config.Config) { c.ShutdownTimeout = 0 }),
		},
		{
			name: "NATS_URL turns the relay on, with its stream's settings",
			env: map[string]string{
				"DATABASE_URL":        databaseURL,
				"NATS_URL":            "nats://a:4222,nats://b:4222",
				"NATS_CREDS_FILE":     "/nats/users.creds",
				"NATS_STREAM":         "PLATFORM_USERS",
				"NATS_STREAM_MAX_AGE": "720h",
			},
			want: defaults(databaseURL, func(c *config.Config) {
				c.Events = config.Events{
					NATSURL: "nats://a:4222,nats://b:4222", NATSCredsFile: "/nats/users.creds",
					Stream: "PLATFORM_USERS", StreamMaxAge: 720 * time.Hour, OutboxRetention: 24 * time.Hour,
				}
			}),
		},
		{
			name: "OUTBOX_RETENTION sets how long events wait with no relay",
			env:  map[string]string{"DATABASE_URL": databaseURL, "OUTBOX_RETENTION": "2h"},
			want: defaults(databaseURL, func(c *config.Config) { c.Events.OutboxRetention = 2 * time.Hour }),
		},
		{
			name: "a keyword/value DATABASE_URL is accepted",
			env:  map[string]string{"DATABASE_URL": "host=db dbname=users pool_max_conns=8"},
			want: defaults("host=db dbname=users pool_max_conns=8", nil),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(getenv(tt.env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Load mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		env          map[string]string
		wantVariable string
		secret       string // must not appear in the error text
	}{
		{
			name:         "a NATS_STREAM with a dot is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "NATS_STREAM": "agyn.users"},
			wantVariable: "NATS_STREAM",
		},
		{
			name:         "a zero NATS_STREAM_MAX_AGE is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "NATS_STREAM_MAX_AGE": "0s"},
			wantVariable: "NATS_STREAM_MAX_AGE",
		},
		{
			name:         "an OUTBOX_RETENTION that is not a duration is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "OUTBOX_RETENTION": "1d"},
			wantVariable: "OUTBOX_RETENTION",
		},
		{
			name:         "NATS_CREDS_FILE without NATS_URL is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "NATS_CREDS_FILE": "/nats/users.creds"},
			wantVariable: "NATS_CREDS_FILE",
		},
		{
			name:         "a missing DATABASE_URL is reported",
			env:          map[string]string{"GRPC_ADDRESS": ":50051"},
			wantVariable: "DATABASE_URL",
		},
		{
			name:         "an invalid pool setting in DATABASE_URL is reported without the password",
			env:          map[string]string{"DATABASE_URL": "postgres://u:secretpw@h/db?pool_max_conns=abc"},
			wantVariable: "DATABASE_URL",
			secret:       "secretpw",
		},
		{
			name:         "an unparsable DATABASE_URL is reported without the password",
			env:          map[string]string{"DATABASE_URL": "postgres://u:secretpw@h:notaport/db"},
			wantVariable: "DATABASE_URL",
			secret:       "secretpw",
		},
		{
			name:         "a GRPC_ADDRESS without a port is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "GRPC_ADDRESS": "localhost"},
			wantVariable: "GRPC_ADDRESS",
		},
		{
			name:         "a SHUTDOWN_TIMEOUT that is not a duration is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "SHUTDOWN_TIMEOUT": "soon"},
			wantVariable: "SHUTDOWN_TIMEOUT",
		},
		{
			name:         "a negative SHUTDOWN_TIMEOUT is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "SHUTDOWN_TIMEOUT": "-1s"},
			wantVariable: "SHUTDOWN_TIMEOUT",
		},
		{
			name:         "an ADMIN_ADDRESS without a port is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "ADMIN_ADDRESS": "localhost"},
			wantVariable: "ADMIN_ADDRESS",
		},
		{
			name:         "a zero DB_TIMEOUT is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "DB_TIMEOUT": "0s"},
			wantVariable: "DB_TIMEOUT",
		},
		{
			name:         "a DB_TIMEOUT that is not a duration is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "DB_TIMEOUT": "5"},
			wantVariable: "DB_TIMEOUT",
		},
		{
			name:         "a negative DRAIN_DELAY is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "DRAIN_DELAY": "-1s"},
			wantVariable: "DRAIN_DELAY",
		},
		{
			name:         "a zero DB_MAX_CONNS is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "DB_MAX_CONNS": "0"},
			wantVariable: "DB_MAX_CONNS",
		},
		{
			name:         "a DB_MAX_CONNS that is not a number is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "DB_MAX_CONNS": "many"},
			wantVariable: "DB_MAX_CONNS",
		},
		{
			name:         "a zero DB_READS_IN_FLIGHT is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "DB_READS_IN_FLIGHT": "0"},
			wantVariable: "DB_READS_IN_FLIGHT",
		},
		{
			name:         "an unknown LOG_LEVEL is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "LOG_LEVEL": "verbose"},
			wantVariable: "LOG_LEVEL",
		},
		{
			name:         "a TLS certificate without its key is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "GRPC_TLS_CERT_FILE": "/tls/tls.crt"},
			wantVariable: "GRPC_TLS_CERT_FILE",
		},
		{
			name:         "a TLS key without its certificate is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "GRPC_TLS_KEY_FILE": "/tls/tls.key"},
			wantVariable: "GRPC_TLS_CERT_FILE",
		},
		{
			name:         "an empty entry in CLUSTER_ADMIN_SUBJECTS is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "CLUSTER_ADMIN_SUBJECTS": "auth0|alice,,auth0|bob"},
			wantVariable: "CLUSTER_ADMIN_SUBJECTS",
		},
		{
			name:         "a subject longer than OpenID Connect allows in CLUSTER_ADMIN_SUBJECTS is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "CLUSTER_ADMIN_SUBJECTS": strings.Repeat("s", 256)},
			wantVariable: "CLUSTER_ADMIN_SUBJECTS",
		},
		{
			name:         "IDENTITY_ASSERTING_CLIENTS without mutual TLS is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "IDENTITY_ASSERTING_CLIENTS": "gateway.platform.svc"},
			wantVariable: "IDENTITY_ASSERTING_CLIENTS",
		},
		{
			name:         "a trailing comma in IDENTITY_ASSERTING_CLIENTS is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "GRPC_TLS_CERT_FILE": "/tls/tls.crt", "GRPC_TLS_KEY_FILE": "/tls/tls.key", "GRPC_TLS_CLIENT_CA_FILE": "/tls/ca.crt", "IDENTITY_ASSERTING_CLIENTS": "gateway.platform.svc,"},
			wantVariable: "IDENTITY_ASSERTING_CLIENTS",
		},
		{
			name:         "a client CA without a server certificate is reported",
			env:          map[string]string{"DATABASE_URL": databaseURL, "GRPC_TLS_CLIENT_CA_FILE": "/tls/ca.crt"},
			wantVariable: "GRPC_TLS_CLIENT_CA_FILE",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(getenv(tt.env))
			if err == nil {
				t.Fatalf("Load = %+v, nil; want an error naming %s", got, tt.wantVariable)
			}
			if !config.IsError(err) {
				t.Errorf("IsError(%v) = false, want true", err)
			}
			var cfgErr *config.Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Load error %v (%T) is not a *config.Error", err, err)
			}
			if cfgErr.Variable != tt.wantVariable {
				t.Errorf("error names variable %q, want %q (error: %v)", cfgErr.Variable, tt.wantVariable, err)
			}
			if !strings.HasPrefix(err.Error(), tt.wantVariable+": ") {
				t.Errorf("error text %q does not start with %q", err, tt.wantVariable+": ")
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error text leaks the password: %q", err)
			}
			if diff := cmp.Diff(config.Config{}, got); diff != "" {
				t.Errorf("Load returned a partial config with its error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIsError(t *testing.T) {
	t.Parallel()
	cfgErr := config.Errorf("DATABASE_URL", "is required")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "a configuration error is one", err: cfgErr, want: true},
		{name: "a wrapped configuration error is one", err: fmt.Errorf("start: %w", cfgErr), want: true},
		{name: "another error is not one", err: errors.New("connection refused"), want: false},
		{name: "nil is not one", err: nil, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := config.IsError(tt.err); got != tt.want {
				t.Errorf("IsError(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestErrorf: the one constructor of configuration errors names the
// variable first, in the error's fields and in its text, and formats the
// reason as fmt.Sprintf does, leaving a %% that an argument carries alone.
func TestErrorf(t *testing.T) {
	t.Parallel()
	err := config.Errorf("DB_TIMEOUT", "%q is not a positive duration", "5%")
	var cfgErr *config.Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Errorf = %v (%T), want a *config.Error", err, err)
	}
	want := &config.Error{Variable: "DB_TIMEOUT", Reason: `"5%" is not a positive duration`}
	if diff := cmp.Diff(want, cfgErr); diff != "" {
		t.Errorf("Errorf (-want +got):\n%s", diff)
	}
	if got, want := err.Error(), `DB_TIMEOUT: "5%" is not a positive duration`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// getenv looks variables up in env, as os.Getenv would in the environment.
func getenv(env map[string]string) func(string) string {
	return func(key string) string { return env[key] }
}
