// Command bench measures the users service beside two yardsticks and the
// database's own limit, in one run on one machine:
//
//	go run ./scripts/bench [-n users] [-duration 10s] [-concurrency 32] [-rounds 3] [-json file]
//
// It starts a throwaway PostgreSQL (as make run does; DATABASE_URL names a
// server to use instead, on which it creates and drops a database of its
// own), seeds it with n users in SQL, and starts three servers, each a
// process of its own: the service (the users binary), the reference (the
// obvious implementation of the same API, reference.go) and the floor (a
// bare gRPC server answering constants, floor.go). Then, for each
// workload, it drives the three in turn with a lean gRPC load generator,
// round after round, and drives pgbench on the cheapest statement that
// returns the same rows and on the service's own statement, at the same
// concurrency and over the same keys. The workloads that write are driven
// through a fourth server too: the service with its change events relayed
// to NATS, beside the service without. It prints the tables, and writes
// the figures as JSON with -json. Any failed call fails the run.
//
// The parts, a file each: main.go (flags, the run from start to end),
// database.go (the database and its seed; keys.go, how seeded users are
// numbered), servers.go (the server processes; reference.go and
// reference_caller.go, floor.go; events.go and nats.go, the service with
// events on), workloads.go (each workload's calls and
// statements; requests.go, its requests, encoded ahead; listing.go, the
// search prefixes and page tokens), loadgen.go (the load generator process),
// pgbench.go, measure.go (a workload's rounds, one run's figures),
// proc.go (CPU and memory, from /proc), poolstats.go (the service's pool
// counters), report.go and print.go (the figures, as JSON and as tables).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxConcurrency bounds -concurrency: pgbench's per-client numbers for
// first logins are spaced this far apart (workloads.go).
const maxConcurrency = 1024

type config struct {
	users       int64
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	rounds      int
	jsonPath    string
	serviceDB   string // extra DATABASE_URL settings for the service
	serviceBin  string // a users binary to run instead of building one
	run         *regexp.Regexp
}

// subcommands are the processes this program also runs as, each started
// by the bench with its name as the one argument.
var subcommands = map[string]func() int{
	loadgenArg:   loadgenMain,
	referenceArg: referenceMain,
	floorArg:     floorMain,
}

// runSubcommand runs this process as the subcommand it was started as,
// if any, and exits.
func runSubcommand() {
	if len(os.Args) > 1 {
		if sub := subcommands[os.Args[1]]; sub != nil {
			os.Exit(sub())
		}
	}
}

func main() {
	runSubcommand()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	defaultUsers, err := strconv.ParseInt(cmp.Or(os.Getenv("N"), "1000000"), 10, 64)
	if err != nil {
		return config{}, fmt.Errorf("environment variable N=%q: %w", os.Getenv("N"), err)
	}
	var c config
	var runPattern string
	fs.Int64Var(&c.users, "n", defaultUsers, "users to seed ($N if set)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time per workload, for each server in each round and for each pgbench run (whole seconds)")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "load on the service before its measured time")
	fs.IntVar(&c.concurrency, "concurrency", 32, "calls in flight (service) and clients (pgbench)")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds of service, reference and floor per workload, interleaved")
	fs.StringVar(&c.jsonPath, "json", "", "also write the figures as JSON to this file")
	fs.StringVar(&c.serviceDB, "service-db-params", "", "settings added to the service's DATABASE_URL, e.g. pool_max_conns=32")
	fs.StringVar(&c.serviceBin, "service-bin", "", "run this users binary instead of building ./cmd/users (to compare builds)")
	fs.StringVar(&runPattern, "run", "", "run only the workloads whose names match this regular expression")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.users < batchSize:
		return config{}, fmt.Errorf("-n %d: want at least %d users", c.users, batchSize)
	case c.duration < time.Second || c.duration%time.Second != 0:
		return config{}, fmt.Errorf("-duration %s: want whole seconds (pgbench counts in seconds)", c.duration)
	case c.warmup < 0:
		return config{}, fmt.Errorf("-warmup %s: want zero or more", c.warmup)
	case c.rounds < 1:
		return config{}, fmt.Errorf("-rounds %d: want at least 1", c.rounds)
	case c.concurrency < 1 || c.concurrency > maxConcurrency:
		return config{}, fmt.Errorf("-concurrency %d: want 1..%d", c.concurrency, maxConcurrency)
	}
	if c.run, err = regexp.Compile(runPattern); err != nil {
		return config{}, fmt.Errorf("-run: %w", err)
	}
	return c, nil
}

func run(ctx context.Context, args []string) error {
	begin := time.Now()
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	// Tools: pgbench, the service's statements, the service's binary.
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	pgbench, err := findPgbench()
	if err != nil {
		return err
	}
	statements, err := queries(filepath.Join(root, "sql", "queries", "users.sql"))
	if err != nil {
		return err
	}
	bin := cfg.serviceBin
	if bin == "" {
		// Into bin/, as make build does.
		bin = filepath.Join(root, "bin", "users")
		if err := buildService(ctx, root, bin); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp("", "users-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// Database: started, migrated and seeded.
	logf("bench: starting PostgreSQL")
	copies := 1
	if wantEvents(cfg) {
		copies = 2
	}
	db, err := openDatabase(ctx, os.Getenv("DATABASE_URL"), cfg.users, copies, os.Stderr)
	if err != nil {
		return err
	}
	defer db.Close()
	logf("bench: seeding %d users", cfg.users)
	seedStart := time.Now()
	if err := seed(ctx, db.URL, cfg.users); err != nil {
		return err
	}
	seedTime := time.Since(seedStart)
	logf("bench: seeded in %s", seedTime.Round(100*time.Millisecond))

	// Servers: the events-on service first, for the workloads that write,
	// since its database is a copy made while no one is connected
	// (events.go); then the service, events off, the reference on the
	// same database, the floor.
	eventsOn, stopEvents, err := startEventsService(ctx, cfg, bin, db, tmp)
	if err != nil {
		return err
	}
	defer stopEvents()
	serviceURL, err := withQuery(db.URL, cfg.serviceDB)
	if err != nil {
		return err
	}
	svc, err := startService(ctx, serviceName, bin, serviceURL, tmp, eventsOff...)
	if err != nil {
		return err
	}
	defer svc.Stop()
	ref, err := startReference(ctx, db.URL, tmp)
	if err != nil {
		return err
	}
	defer ref.Stop()
	floor, err := startFloor(ctx, tmp)
	if err != nil {
		return err
	}
	defer floor.Stop()

	// Workloads, each in turn.
	rep := newReport(cfg, db, pgbench, seedTime)
	b := &bench{cfg: cfg, db: db, pgbench: pgbench, service: svc, ref: ref, floor: floor, eventsOn: eventsOn}
	for _, w := range workloads {
		if !cfg.run.MatchString(w.name) {
			continue
		}
		sql, ok := statements[w.query]
		if !ok {
			return fmt.Errorf("sql/queries/users.sql has no query %s", w.query)
		}
		r, err := b.measureWorkload(ctx, w, sql)
		if err != nil {
			return err
		}
		rep.add(r)
	}
	rep.TotalSeconds = time.Since(begin).Seconds()

	rep.print(os.Stdout)
	if cfg.jsonPath != "" {
		if err := rep.writeJSON(cfg.jsonPath); err != nil {
			return err
		}
	}
	return rep.failures()
}

// moduleRoot is the directory of the module this program belongs to,
// where ./cmd/users and sql/ are.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, "cmd", "users")); err != nil {
		return "", errors.New("run the bench from the users module")
	}
	return dir, nil
}

// logf notes progress on stderr; the table goes to stdout.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
