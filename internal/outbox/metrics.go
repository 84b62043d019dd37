package outbox

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agynio/users/internal/db"
)

// Metrics are the outbox's: what the relay published and failed to, what
// the pruner deleted, whether this replica relays, and, read from the
// database at each scrape, the events pending and the oldest one's age.
type Metrics struct {
	published prometheus.Counter
	failed    prometheus.Counter
	pruned    prometheus.Counter
	leader    prometheus.Gauge
	backlog   *backlogCollector
}

// NewMetrics registers the outbox's metrics in reg; the backlog is read
// with q, each scrape's read bounded by timeout.
func NewMetrics(reg prometheus.Registerer, q *db.Queries, timeout time.Duration) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "users_events_published_total",
			Help: "Change events JetStream acknowledged, published by this replica's relay.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "users_events_publish_failures_total",
			Help: "Change events whose publish failed (no acknowledgement, or an error), each attempt counted; the relay tries them again.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "users_events_pruned_total",
			Help: "Change events deleted unpublished after OUTBOX_RETENTION, with no relay configured (NATS_URL unset).",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "users_events_relay_leader",
			Help: "1 on the replica whose relay holds the lock and publishes, 0 on the others.",
		}),
		backlog: &backlogCollector{
			q:       q,
			timeout: timeout,
			pending: prometheus.NewDesc("users_events_pending",
				"Change events in the outbox, not yet published (or, with no relay, not yet pruned). Read from the database at each scrape.", nil, nil),
			oldest: prometheus.NewDesc("users_events_oldest_pending_age_seconds",
				"How long ago the oldest event in the outbox was written; 0 with none. Read from the database at each scrape.", nil, nil),
		},
	}
	reg.MustRegister(m.published, m.failed, m.pruned, m.leader, m.backlog)
	return m
}

// backlogCollector reads the outbox's backlog when scraped. A scrape
// while the database is unreachable leaves the two gauges out, rather
// than report a backlog of zero.
type backlogCollector struct {
	q               *db.Queries
	timeout         time.Duration
	pending, oldest *prometheus.Desc
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.oldest
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	b, err := c.q.OutboxBacklog(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(b.Pending))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, b.OldestAgeSeconds)
}
