package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/internal/testing/testdb"
)

func backlogOf(samples ...float64) backlog {
	var b backlog
	for _, v := range samples {
		b.add(v)
	}
	return b
}

func TestBacklogIsFlatUnlessItEndsAboveWhereItStarted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		samples []float64
		flat    bool
	}{
		{"empty throughout", []float64{0, 0, 0}, true},
		{"up and down within a relay round's worth", []float64{0, 400, 900, 120}, true},
		{"ending at the bound", []float64{0, 3000, flatBound}, true},
		{"ending just above the bound, from empty", []float64{0, 200, flatBound + 1}, false},
		{"growing all through", []float64{0, 2000, 4000, 6000}, false},
		{"a backlog from before, drained", []float64{5000, 3000, 200}, true},
		{"a backlog from before, no smaller at the end", []float64{5000, 5000}, true},
		{"a backlog from before, grown", []float64{5000, 6000, 5001}, false},
		{"no sample", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := backlogOf(c.samples...).flat(); got != c.flat {
				t.Errorf("samples %v: flat() = %v, want %v", c.samples, got, c.flat)
			}
		})
	}
}

func TestBacklogKeepsTheFirstLastAndMax(t *testing.T) {
	t.Parallel()
	b := backlogOf(7, 300, 40, 90)
	if b.First != 7 || b.Last != 90 || b.Max != 300 || b.Samples != 4 {
		t.Errorf("backlog of 7, 300, 40, 90: first %v, last %v, max %v, %d samples", b.First, b.Last, b.Max, b.Samples)
	}
}

func TestEventsOnlyForTheWorkloadsThatWriteAndRun(t *testing.T) {
	t.Parallel()
	var writes []string
	for _, w := range workloads {
		if w.events {
			writes = append(writes, w.name)
		}
	}
	if want := []string{"ResolveOrCreateUser new", "UpdateUser"}; strings.Join(writes, ", ") != strings.Join(want, ", ") {
		t.Errorf("workloads measured with events on: %q, want %q", writes, want)
	}
	for pattern, want := range map[string]bool{"": true, "UpdateUser": true, "new$": true, "GetUser": false, "^ResolveOrCreateUser existing$": false} {
		if got := wantEvents(config{run: regexp.MustCompile(pattern)}); got != want {
			t.Errorf("-run %q: wantEvents = %v, want %v", pattern, got, want)
		}
	}
}

// TestEventsOnServiceRelaysItsOwnEvents starts the events-on service as
// the bench does and drives updates through it for a moment: its relay
// must publish every event to the NATS server, leave the outbox empty,
// and do so on its copy of the database, leaving the original's outbox
// (the events-off service's) alone.
func TestEventsOnServiceRelaysItsOwnEvents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "users")
	if err := buildService(ctx, filepath.Join("..", ".."), bin); err != nil {
		t.Fatal(err)
	}
	// As the superuser, as the bench runs: it copies the database.
	dbURL := testdb.AsSuperuser(t, testdb.URL(t))
	const users = 1000
	if err := seed(ctx, dbURL, users); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	serverURL, err := withDatabase(dbURL, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	db := &database{URL: dbURL, server: serverURL, name: strings.TrimPrefix(u.Path, "/")}
	t.Cleanup(db.Close)

	srv, stop, err := startEventsService(ctx, config{run: regexp.MustCompile("^UpdateUser$")}, bin, db, tmp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	sampler := sampleBacklog(ctx, srv.AdminAddr, time.Minute)
	res, err := generateLoad(loadSpec{
		Addr: srv.Addr, Server: srv.Name, Workload: "UpdateUser", Users: users,
		Concurrency: 2, Duration: 500 * time.Millisecond, ServerPID: srv.PID(), NATSPID: os.Getpid(), Seed: 1,
	})
	b := sampler.finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Calls == 0 || len(res.Errors) > 0 {
		t.Fatalf("%d calls, errors %v (first: %s)", res.Calls, res.Errors, res.FirstError)
	}
	if !b.Drained || b.Published < float64(res.Calls) || b.PublishFailures > 0 || b.Samples == 0 || b.Missed > 0 {
		t.Errorf("backlog %+v after %d updates: want it sampled, drained, and every update's event published", b, res.Calls)
	}

	// The updates renamed users in the copy, and none in the original.
	for _, c := range []struct {
		db      string
		renamed bool
	}{{db.name, false}, {db.name + "_events", true}} {
		u, err := withDatabase(dbURL, c.db)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		var renamed int64
		err = conn.QueryRow(ctx, "SELECT count(*) FROM users WHERE name NOT LIKE 'Bench User %'").Scan(&renamed)
		conn.Close(ctx)
		if err != nil || (renamed > 0) != c.renamed {
			t.Errorf("database %s: %d users renamed (%v); want some only in the events-on service's copy", c.db, renamed, err)
		}
	}
}
