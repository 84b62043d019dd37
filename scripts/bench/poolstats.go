package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// poolStats are the service's pgxpool counters, read from its /metrics:
// whether calls wait for a database connection, and how long.
type poolStats struct {
	MaxConns      float64
	Acquires      float64
	AcquireWait   float64 // ns, all acquires
	EmptyAcquires float64 // acquires that found no idle connection
}

// poolUse is the difference of two poolStats over a run.
type poolUse struct {
	MaxConns float64 `json:"max_conns"`
	// WaitedShare is the share of acquires that found no idle connection.
	WaitedShare float64 `json:"waited_share"`
	// MeanWait is the mean time an acquire took, waits included.
	MeanWait time.Duration `json:"mean_acquire_ns"`
}

func (s poolStats) since(before poolStats) poolUse {
	n := s.Acquires - before.Acquires
	if n <= 0 {
		return poolUse{MaxConns: s.MaxConns}
	}
	return poolUse{
		MaxConns:    s.MaxConns,
		WaitedShare: (s.EmptyAcquires - before.EmptyAcquires) / n,
		MeanWait:    time.Duration((s.AcquireWait - before.AcquireWait) / n),
	}
}

// scrapePool reads the pool's counters from the service's admin listener.
func scrapePool(ctx context.Context, adminAddr string) (poolStats, error) {
	families, err := scrapeMetrics(ctx, adminAddr)
	if err != nil {
		return poolStats{}, err
	}
	if families["pgxpool_acquire_count"] == nil {
		return poolStats{}, fmt.Errorf("no pgxpool_* metrics")
	}
	sum := func(name string) float64 { return sumMetric(families[name]) }
	return poolStats{
		MaxConns:      sum("pgxpool_max_conns"),
		Acquires:      sum("pgxpool_acquire_count"),
		AcquireWait:   sum("pgxpool_acquire_duration_ns"),
		EmptyAcquires: sum("pgxpool_empty_acquire"),
	}, nil
}

// scrapeMetrics reads the service's /metrics, by metric name.
func scrapeMetrics(ctx context.Context, adminAddr string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	return families, nil
}

// sumMetric is a metric's value summed over its label sets (for the
// pool's, one per pool), whatever its type; 0 if f is nil.
func sumMetric(f *dto.MetricFamily) float64 {
	var v float64
	for _, m := range f.GetMetric() {
		v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return v
}
