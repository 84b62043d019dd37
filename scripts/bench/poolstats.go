package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
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
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return poolStats{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return poolStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return poolStats{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var s poolStats
	fields := map[string]*float64{
		"pgxpool_max_conns":           &s.MaxConns,
		"pgxpool_acquire_count":       &s.Acquires,
		"pgxpool_acquire_duration_ns": &s.AcquireWait,
		"pgxpool_empty_acquire":       &s.EmptyAcquires,
	}
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "pgxpool_") {
			continue
		}
		name, value, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		if p, ok := fields[name]; ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err == nil {
				*p += v
				found = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if !found {
		return s, fmt.Errorf("no pgxpool_* metrics")
	}
	return s, nil
}
