package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/agynio/users/internal/testing/pgtest"
)

// findPgbench returns pgbench: beside the PostgreSQL server binaries that
// make run would use (the same package installs both), else on PATH.
func findPgbench() (string, error) {
	if dir, err := pgtest.FindBinaries(); err == nil {
		dirs := []string{dir}
		// initdb may be a link into the real bin directory (Debian puts
		// only some of them on PATH).
		if real, err := filepath.EvalSymlinks(filepath.Join(dir, "initdb")); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
		for _, d := range dirs {
			if p, err := exec.LookPath(filepath.Join(d, "pgbench")); err == nil {
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	return "", errors.New("pgbench not found beside the PostgreSQL server binaries nor on PATH (Debian: apt-get install postgresql)")
}

// queries returns the statements of a sqlc query file by name, without
// their comments.
func queries(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var name string
	var sql []string
	flush := func() {
		if name != "" {
			out[name] = strings.TrimSpace(strings.Join(sql, "\n"))
		}
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, " \t\r\n")
		if rest, ok := strings.CutPrefix(line, "-- name: "); ok {
			flush()
			name, sql = strings.Fields(rest)[0], nil
			continue
		}
		if trimmed := strings.TrimSpace(line); trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		sql = append(sql, line)
	}
	flush()
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no -- name: blocks", path)
	}
	return out, nil
}

// sqlcParam matches a parameter as sqlc spells it: sqlc.arg(x),
// sqlc.narg(x), @x.
var sqlcParam = regexp.MustCompile(`sqlc\.n?arg\(\s*'?(\w+)'?\s*\)|@(\w+)`)

// pgbenchStatement rewrites a sqlc statement for pgbench: each parameter
// becomes the pgbench variable of its name, or b's expression around it.
// pgbench numbers its parameters $1, $2... in the order its variables
// appear and binds each appearance separately; a parameter that appears
// twice is written as the first appearance's $n the second time, so that
// it is bound once, as sqlc binds it.
func pgbenchStatement(sql string, b pgbenchBinding) string {
	numbers := map[string]int{}
	return sqlcParam.ReplaceAllStringFunc(sql, func(m string) string {
		sub := sqlcParam.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		expr, ok := b.params[name]
		if !ok {
			expr = "%s"
		}
		if !strings.Contains(expr, "%s") {
			return expr
		}
		if n, ok := numbers[name]; ok {
			return fmt.Sprintf(expr, "$"+strconv.Itoa(n))
		}
		numbers[name] = len(numbers) + 1
		return fmt.Sprintf(expr, ":"+name)
	})
}

// pgbenchResult is what a pgbench run reports.
type pgbenchResult struct {
	TPS            float64       `json:"tps"`
	LatencyAverage time.Duration `json:"latency_average_ns"`
	Transactions   int64         `json:"transactions"`
	Failed         int64         `json:"failed"`
}

// runPgbench runs script at the given concurrency for d against url.
func runPgbench(ctx context.Context, pgbench, url, script string, defines []string, concurrency int, d time.Duration) (pgbenchResult, error) {
	f, err := os.CreateTemp("", "users-bench-*.sql")
	if err != nil {
		return pgbenchResult{}, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		return pgbenchResult{}, err
	}
	if err := f.Close(); err != nil {
		return pgbenchResult{}, err
	}

	args := []string{
		"-M", "prepared", // as pgx runs them: prepared once per connection
		"-c", strconv.Itoa(concurrency),
		"-j", strconv.Itoa(min(2, concurrency)),
		"-T", strconv.Itoa(int(d / time.Second)),
		"-n", // no VACUUM of pgbench's own tables: there are none
		"-f", f.Name(),
	}
	for _, def := range defines {
		args = append(args, "-D", def)
	}
	args = append(args, url)
	cmd := exec.CommandContext(ctx, pgbench, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench: %w\n%s%s", err, lastLines(stderr.String(), 10), lastLines(stdout.String(), 10))
	}
	res, err := parsePgbench(stdout.String())
	if err != nil {
		return res, fmt.Errorf("pgbench: %w\n%s", err, stdout.String())
	}
	return res, nil
}

// parsePgbench reads pgbench's summary.
func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	var haveTPS bool
	for line := range strings.Lines(out) {
		switch {
		case strings.HasPrefix(line, "tps = "):
			v, err := strconv.ParseFloat(strings.Fields(line)[2], 64)
			if err != nil {
				return r, err
			}
			r.TPS, haveTPS = v, true
		case strings.HasPrefix(line, "latency average = "):
			f := strings.Fields(line) // latency average = 1.234 ms
			v, err := strconv.ParseFloat(f[3], 64)
			if err == nil && len(f) > 4 && f[4] == "ms" {
				r.LatencyAverage = time.Duration(v * float64(time.Millisecond))
			}
		case strings.HasPrefix(line, "number of transactions actually processed: "):
			r.Transactions, _ = strconv.ParseInt(strings.Fields(line)[5], 10, 64)
		case strings.HasPrefix(line, "number of failed transactions: "):
			r.Failed, _ = strconv.ParseInt(strings.Fields(line)[4], 10, 64)
		}
	}
	if !haveTPS {
		return r, errors.New("no tps in the output")
	}
	return r, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
