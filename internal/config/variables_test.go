package config_test

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agynio/users/internal/config"
	"github.com/agynio/users/internal/db"
	"github.com/agynio/users/internal/server"
)

// everyVariable sets every variable Load reads, each to a valid value
// other than its default.
var everyVariable = map[string]string{
	"DATABASE_URL":                       databaseURL,
	"DB_SERVE_ROLE":                      "users_serve",
	"GRPC_ADDRESS":                       "127.0.0.1:9000",
	"ADMIN_ADDRESS":                      "127.0.0.1:9090",
	"DRAIN_DELAY":                        "3s",
	"SHUTDOWN_TIMEOUT":                   "30s",
	"DB_TIMEOUT":                         "2s",
	"DB_MAX_CONNS":                       "12",
	"DB_READS_IN_FLIGHT":                 "3",
	"LOG_LEVEL":                          "debug",
	"GRPC_TLS_CERT_FILE":                 "/tls/tls.crt",
	"GRPC_TLS_KEY_FILE":                  "/tls/tls.key",
	"GRPC_TLS_CLIENT_CA_FILE":            "/tls/ca.crt",
	"CLUSTER_ADMIN_SUBJECTS":             "auth0|alice",
	"IDENTITY_ASSERTING_CLIENTS":         "gateway.platform.svc",
	"NATS_URL":                           "nats://nats:4222",
	"NATS_CREDS_FILE":                    "/nats/users.creds",
	"NATS_STREAM":                        "PLATFORM_USERS",
	"NATS_STREAM_MAX_AGE":                "720h",
	"OUTBOX_RETENTION":                   "2h",
	"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://collector:4317",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317",
}

// TestLoadReadsTheTableOnly: with every variable set, so that no early
// return skips a read, Load asks for table rows only (its lookup panics on
// any other name) and for every row it documents as its own, so that
// nothing it reads is undocumented and nothing documented is ignored.
func TestLoadReadsTheTableOnly(t *testing.T) {
	t.Parallel()
	read := map[string]bool{}
	_, err := config.Load(func(name string) string {
		read[name] = true
		return everyVariable[name]
	})
	if err != nil {
		t.Fatalf("Load with every variable set: %v", err)
	}
	documented := map[string]bool{}
	for _, v := range config.Variables {
		documented[v.Name] = true
	}
	// A read past the table's lookup, straight from getenv.
	for _, name := range slices.Sorted(maps.Keys(read)) {
		if !documented[name] {
			t.Errorf("Load read %s, which is not in Variables", name)
		}
	}
	for _, v := range config.Variables {
		if v.ReadBy == "" && !read[v.Name] {
			t.Errorf("Variables documents %s, but Load never reads it", v.Name)
		}
		if _, set := everyVariable[v.Name]; v.ReadBy == "" && !set {
			t.Errorf("everyVariable does not set %s: set it, so that this test reaches its read", v.Name)
		}
	}
}

// TestDocumentedDefaults: setting a variable to its documented default
// changes nothing, so the default Load uses is the one "users -h" and the
// README show.
func TestDocumentedDefaults(t *testing.T) {
	t.Parallel()
	base := map[string]string{"DATABASE_URL": databaseURL}
	unset, err := config.Load(getenv(base))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, v := range config.Variables {
		if v.Default == "" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			env := maps.Clone(base)
			env[v.Name] = v.Default
			set, err := config.Load(getenv(env))
			if err != nil {
				t.Fatalf("Load with %s=%s, its default: %v", v.Name, v.Default, err)
			}
			if diff := cmp.Diff(set, unset); diff != "" {
				t.Errorf("%s unset is not %s=%s (-set +unset):\n%s", v.Name, v.Name, v.Default, diff)
			}
		})
	}
}

// TestVariablesTable: every row is documented whole, once.
func TestVariablesTable(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, v := range config.Variables {
		if seen[v.Name] {
			t.Errorf("%s has two rows", v.Name)
		}
		seen[v.Name] = true
		if (v.Default == "") == (v.Unset == "") {
			t.Errorf("%s: Default %q, Unset %q: want exactly one, a value or what unset means", v.Name, v.Default, v.Unset)
		}
		if !strings.HasSuffix(v.Meaning, ".") {
			t.Errorf("%s: Meaning %q is not a sentence ending in a full stop", v.Name, v.Meaning)
		}
	}
}

// TestDBMaxConnsDefault: the pool size documented for an unset
// DB_MAX_CONNS is the pool's own default, which Load does not set.
func TestDBMaxConnsDefault(t *testing.T) {
	t.Parallel()
	for _, v := range config.Variables {
		if v.Name != "DB_MAX_CONNS" {
			continue
		}
		if want := strconv.Itoa(db.DefaultMaxConns) + ","; !strings.HasPrefix(v.Unset, want) {
			t.Errorf("DB_MAX_CONNS unset is documented as %q; the pool's default is %d", v.Unset, db.DefaultMaxConns)
		}
		return
	}
	t.Error("no DB_MAX_CONNS row")
}

// TestDBReadsInFlightDefault: the table's default is the server's own, so
// that a test building the server without the option sees what serve does.
func TestDBReadsInFlightDefault(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(func(name string) string {
		if name == "DATABASE_URL" {
			return "postgres://u@localhost/users"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DBReadsInFlight != server.DefaultReadsInFlight {
		t.Errorf("DB_READS_IN_FLIGHT defaults to %d; the server's default is %d", cfg.DBReadsInFlight, server.DefaultReadsInFlight)
	}
}
