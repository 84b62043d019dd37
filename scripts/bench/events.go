package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// The change events' cost. Every write of the service writes its event to
// the outbox in the same statement, whether events are relayed or not;
// what NATS_URL adds is the relay, which reads the outbox, publishes each
// event to JetStream and deletes it. The requirement: with events
// relayed, the writes run at eventsTarget of their rate without, in the
// same run, and under updates the relay keeps up, so that the outbox does
// not grow.
//
// So the bench runs a second users process, eventsName, with NATS_URL
// naming a NATS server in the bench's own process (nats.go), and in each
// round of a workload marked events measures it right after the service,
// which is the events-off one: its runs are the baseline. During each of
// the events-on service's runs it samples the outbox's backlog
// (users_events_pending) from its /metrics.
//
// The events-on service has a copy of the database of its own. With one
// database the two would share the outbox, and the relay, which runs all
// along, would publish the events-off service's events as they are
// written, during the events-off service's own runs: the relay's cost on
// both sides of the ratio, which would hide it. Its backlog would count
// them too, and pgbench's.
const (
	eventsName   = "service-events"
	eventsStream = "USERS_BENCH"
	eventsTarget = 0.85
	// pendingEvery is how often the backlog is sampled. Each sample costs
	// the events-on service a scrape, and the database a count of the
	// outbox, within its measured window: a cost on its side only.
	pendingEvery = time.Second
	// flatBound is the backlog below which it counts as flat whatever it
	// started at. A relay that keeps up empties the outbox every round and
	// then waits outbox.DefaultPoll (200 ms) for more, so a sample may
	// find what came in that wait and in the round: at the bench's write
	// rates, up to 5000 a second, under 2000. One that falls behind passes
	// that within a run, and does not empty the outbox soon after it.
	flatBound = 2000
	// drainTimeout bounds the wait, after each run, for the relay to
	// empty the outbox, so that the events-on run's tail does not fall
	// on the next run.
	drainTimeout = 15 * time.Second
)

// eventsOff is the events-off service's environment: no NATS, whatever
// the bench's own environment holds.
var eventsOff = []string{"NATS_URL=", "NATS_CREDS_FILE="}

// wantEvents says whether a workload that -run selects is measured with
// events on as well.
func wantEvents(cfg config) bool {
	for _, w := range workloads {
		if w.events && cfg.run.MatchString(w.name) {
			return true
		}
	}
	return false
}

// startEventsService starts the events-on service, if a workload needs
// it, on a copy of db, with a NATS server of its own; stop stops both.
// The copy is made first, while no server is connected to db.
func startEventsService(ctx context.Context, cfg config, bin string, db *database, tmp string) (srv *server, stop func(), err error) {
	if !wantEvents(cfg) {
		return nil, func() {}, nil
	}
	logf("bench: copying the database for the events-on service")
	copyURL, err := db.copyOf(ctx, "events")
	if err != nil {
		return nil, nil, err
	}
	if copyURL, err = withQuery(copyURL, cfg.serviceDB); err != nil {
		return nil, nil, err
	}
	ns, err := startNATS(filepath.Join(tmp, "nats"))
	if err != nil {
		return nil, nil, err
	}
	srv, err = startService(ctx, eventsName, bin, copyURL, tmp,
		"NATS_URL="+ns.ClientURL(), "NATS_CREDS_FILE=", "NATS_STREAM="+eventsStream)
	if err == nil {
		if err = waitRelaying(ctx, srv.AdminAddr); err != nil {
			srv.Stop()
			err = fmt.Errorf("%s: %w\n%s", eventsName, err, srv.logTail())
		}
	}
	if err != nil {
		stopNATS(ns)
		return nil, nil, err
	}
	return srv, func() { srv.Stop(); stopNATS(ns) }, nil
}

// eventsStats are the outbox's figures in the service's /metrics.
type eventsStats struct {
	Pending, Published, Failures, Leader float64
}

func scrapeEvents(ctx context.Context, adminAddr string) (eventsStats, error) {
	families, err := scrapeMetrics(ctx, adminAddr)
	if err != nil {
		return eventsStats{}, err
	}
	// Left out when the service could not read the outbox.
	pending := families["users_events_pending"]
	if pending == nil {
		return eventsStats{}, errors.New("no users_events_pending")
	}
	return eventsStats{
		Pending:   sumMetric(pending),
		Published: sumMetric(families["users_events_published_total"]),
		Failures:  sumMetric(families["users_events_publish_failures_total"]),
		Leader:    sumMetric(families["users_events_relay_leader"]),
	}, nil
}

// waitRelaying waits until the service's relay holds the lock and
// publishes: a relay that never started would make events look free.
func waitRelaying(ctx context.Context, adminAddr string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		s, err := scrapeEvents(ctx, adminAddr)
		if err == nil && s.Leader == 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the relay did not start within 15s (last: leader %v, %v)", s.Leader, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// backlog is the outbox of the events-on service over one run: its
// size, sampled every pendingEvery from before the load generator starts
// until it ends, what the relay published, and how long after the run
// the outbox took to empty.
type backlog struct {
	First   float64 `json:"first"`
	Last    float64 `json:"last"`
	Max     float64 `json:"max"`
	Samples int     `json:"samples"`
	// Missed counts the scrapes of /metrics that failed (a sample, or the
	// count published, not known).
	Missed          int     `json:"missed_scrapes,omitempty"`
	Published       float64 `json:"published"`
	PublishFailures float64 `json:"publish_failures,omitempty"`
	// Drain is how long the outbox took to empty after the run, if
	// Drained; else it did not within drainTimeout.
	Drain   time.Duration `json:"drain_ns"`
	Drained bool          `json:"drained"`
}

// add counts one sample.
func (b *backlog) add(pending float64) {
	if b.Samples == 0 {
		b.First = pending
	}
	b.Last, b.Max = pending, max(b.Max, pending)
	b.Samples++
}

// flat says whether the backlog did not grow through the run: it ended no
// higher than it started, or than flatBound.
func (b backlog) flat() bool {
	return b.Samples > 0 && b.Last <= max(b.First, flatBound)
}

// backlogSampler samples a service's backlog in the background.
type backlogSampler struct {
	adminAddr string
	before    eventsStats
	beforeErr error
	stop      chan struct{}
	done      chan struct{}
	b         backlog
}

// sampleBacklog starts sampling the backlog at adminAddr, for at most
// limit.
func sampleBacklog(ctx context.Context, adminAddr string, limit time.Duration) *backlogSampler {
	s := &backlogSampler{adminAddr: adminAddr, stop: make(chan struct{}), done: make(chan struct{})}
	s.before, s.beforeErr = scrapeEvents(ctx, adminAddr)
	ctx, cancel := context.WithTimeout(ctx, limit)
	go func() {
		defer close(s.done)
		defer cancel()
		tick := time.NewTicker(pendingEvery)
		defer tick.Stop()
		for {
			if st, err := scrapeEvents(ctx, adminAddr); err == nil {
				s.b.add(st.Pending)
			} else if ctx.Err() == nil {
				s.b.Missed++
			}
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// finish stops the sampling and waits, up to drainTimeout, for the
// outbox to empty.
func (s *backlogSampler) finish(ctx context.Context) backlog {
	close(s.stop)
	<-s.done
	b := s.b
	start := time.Now()
	var last eventsStats
	lastErr := errors.New("not read")
	for {
		st, err := scrapeEvents(ctx, s.adminAddr)
		if err == nil {
			last, lastErr = st, nil
			if st.Pending == 0 {
				b.Drain, b.Drained = time.Since(start), true
				break
			}
		}
		if time.Since(start) > drainTimeout || ctx.Err() != nil {
			break
		}
		time.Sleep(pendingEvery)
	}
	if s.beforeErr == nil && lastErr == nil {
		b.Published = last.Published - s.before.Published
		b.PublishFailures = last.Failures - s.before.Failures
	} else {
		b.Missed++ // the published count is unknown
	}
	return b
}
