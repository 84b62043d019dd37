package config

// Variable is a row of Variables.
type Variable struct {
	// Name is the variable's name, or a family's ("PG*") for the
	// variables a library reads by itself.
	Name string
	// Default is what Load parses, with the code that parses a set value,
	// when the variable is unset or empty; "" when there is none.
	Default string
	// Unset, for a variable with no Default, says what leaving it unset
	// means: "(required)", "(none)", or what happens instead.
	Unset string
	// Meaning is what "users -h" says of it: a few sentences at most. The
	// README may say more.
	Meaning string
	// ReadBy names the library that reads the variable itself; "" when
	// only Load reads it.
	ReadBy string
}

// DefaultText is the default as documented: Default, or else Unset.
func (v Variable) DefaultText() string {
	if v.Default != "" {
		return v.Default
	}
	return v.Unset
}

// Variables are the environment variables of the service, in the order
// they are documented. Load reads no other (its lookup panics on a name
// missing here, and a test runs it with every one set), "users -h" prints
// them, and a test holds the README's Configuration table to them: code,
// help and README cannot tell different stories.
var Variables = []Variable{
	{
		Name:  "DATABASE_URL",
		Unset: "(required)",
		Meaning: "PostgreSQL URL (postgres://user:password@host:5432/users) or key=value string; " +
			"pgx settings such as pool_max_conns and connect_timeout ride in it. " +
			"The database must be UTF8. users migrate takes the same string.",
	},
	{
		Name:   "PG*",
		Unset:  "(pgx's defaults)",
		ReadBy: "pgx",
		Meaning: "libpq's variables (PGSSLROOTCERT, PGSSLCERT, PGSSLKEY, PGSSLMODE, PGPASSWORD, " +
			"PGPASSFILE, PGAPPNAME, ...) fill in what DATABASE_URL leaves out.",
	},
	{
		Name:    "GRPC_ADDRESS",
		Default: ":50051",
		Meaning: "host:port the gRPC server listens on.",
	},
	{
		Name:    "ADMIN_ADDRESS",
		Default: ":8080",
		Meaning: "host:port of the admin HTTP listener (/healthz, /readyz, /metrics). " +
			"Keep it off the service's public address.",
	},
	{
		Name:    "DRAIN_DELAY",
		Default: "0s",
		Meaning: "On SIGINT/SIGTERM health turns NOT_SERVING at once, but calls are still " +
			"served for this long before the drain: the time load balancers take to stop sending.",
	},
	{
		Name:    "SHUTDOWN_TIMEOUT",
		Default: "20s",
		Meaning: "After DRAIN_DELAY, how long in-flight RPCs may drain before they are cut off.",
	},
	{
		Name:    "DB_TIMEOUT",
		Default: "5s",
		Meaning: "Bound on every database call, the wait for a pool connection included; " +
			"the caller's deadline wins when it is earlier.",
	},
	{
		Name:  "DB_MAX_CONNS",
		Unset: "16, or pool_max_conns in DATABASE_URL",
		Meaning: "Connections in the service's pool, per replica. Wins over pool_max_conns " +
			"in DATABASE_URL.",
	},
	{
		Name:  "DB_SERVE_ROLE",
		Unset: "(none)",
		Meaning: "The role \"users serve\" connects as: \"users migrate up\" grants it exactly " +
			"the privileges serve's queries need (sql/grants.sql).",
	},
	{
		Name:    "DB_READS_IN_FLIGHT",
		Default: "2",
		Meaning: "How many point reads of one kind run their statement at once before " +
			"further ones are coalesced into one statement.",
	},
	{
		Name:    "LOG_LEVEL",
		Default: "info",
		Meaning: "debug, info, warn or error.",
	},
	{
		Name:   "GOMEMLIMIT",
		Unset:  "90% of the container's memory limit",
		ReadBy: "the Go runtime",
		Meaning: "The soft memory limit; serve sets it from the cgroup's memory limit " +
			"(the machine's memory outside a container) unless it is set.",
	},
	{
		Name:    "GRPC_TLS_CERT_FILE",
		Unset:   "(plaintext)",
		Meaning: "PEM certificate chain: gRPC serves TLS. Re-read while serving.",
	},
	{
		Name:    "GRPC_TLS_KEY_FILE",
		Unset:   "(plaintext)",
		Meaning: "PEM key of GRPC_TLS_CERT_FILE, set with it.",
	},
	{
		Name:    "GRPC_TLS_CLIENT_CA_FILE",
		Unset:   "(none)",
		Meaning: "PEM CA bundle: mutual TLS, a client must present a certificate signed by one of these CAs.",
	},
	{
		Name:    "CLUSTER_ADMIN_SUBJECTS",
		Unset:   "(none)",
		Meaning: "Comma-separated OIDC subjects that are cluster administrators whatever the database says.",
	},
	{
		Name:  "IDENTITY_ASSERTING_CLIENTS",
		Unset: "(none)",
		Meaning: "Comma-separated client-certificate SANs (DNS names or URIs) that may name " +
			"the caller in x-identity-id. Needs GRPC_TLS_CLIENT_CA_FILE.",
	},
	{
		Name:  "NATS_URL",
		Unset: "(events not relayed)",
		Meaning: "NATS server URL(s) with JetStream, comma-separated: turns on the relay " +
			"of the change events.",
	},
	{
		Name:    "NATS_CREDS_FILE",
		Unset:   "(none)",
		Meaning: "NATS credentials file (user JWT and seed) to connect with. Needs NATS_URL.",
	},
	{
		Name:    "NATS_STREAM",
		Default: "USERS",
		Meaning: "The JetStream stream the relay creates, with subjects agyn.users.>, if none of this name exists.",
	},
	{
		// A consumer that was away for up to a week catches up.
		Name:    "NATS_STREAM_MAX_AGE",
		Default: "168h",
		Meaning: "How long that stream keeps an event, when the relay creates it.",
	},
	{
		// A day: see outbox.DefaultRetention for the reason.
		Name:    "OUTBOX_RETENTION",
		Default: "24h",
		Meaning: "With no NATS_URL: how long an event waits in the outbox before it is deleted unpublished.",
	},
	{
		Name:   "OTEL_EXPORTER_OTLP_ENDPOINT",
		Unset:  "(no tracing)",
		ReadBy: "the OpenTelemetry SDK",
		Meaning: "OTLP/gRPC collector, e.g. http://otel-collector:4317: spans of every RPC " +
			"and SQL statement are exported.",
	},
	{
		Name:    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		Unset:   "(no tracing)",
		ReadBy:  "the OpenTelemetry SDK",
		Meaning: "The same, for traces alone.",
	},
	{
		Name:   "OTEL_*",
		Unset:  "(the SDK's defaults)",
		ReadBy: "the OpenTelemetry SDK",
		Meaning: "The other standard OpenTelemetry variables apply (OTEL_EXPORTER_OTLP_HEADERS, " +
			"OTEL_EXPORTER_OTLP_INSECURE, OTEL_TRACES_SAMPLER, ...).",
	},
}

// variable returns the row of Variables named name.
func variable(name string) (Variable, bool) {
	for _, v := range Variables {
		if v.Name == name {
			return v, true
		}
	}
	return Variable{}, false
}
