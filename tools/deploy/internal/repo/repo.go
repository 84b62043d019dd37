// Package repo finds the repository the checks look at, and the pinned
// tools "make tools" built for them.
package repo

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Root returns the repository root: the nearest directory above the
// working directory (a package of this module, under go test) that holds
// the chart.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "helm", "users", "Chart.yaml")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root not found above the working directory")
		}
		dir = parent
	}
}

// Path returns a path inside the repository, from slash-separated parts.
func Path(t testing.TB, parts ...string) string {
	t.Helper()
	return filepath.Join(append([]string{Root(t)}, parts...)...)
}

// Helm returns the pinned helm: $HELM if set, else bin/helm. A missing
// helm fails the test rather than skipping it, so that CI cannot pass
// without having checked the chart.
func Helm(t testing.TB) string {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		helm = Path(t, "bin", "helm")
	}
	if _, err := exec.LookPath(helm); err != nil {
		t.Fatalf("helm not found at %s: run make tools (%v)", helm, err)
	}
	return helm
}

// Template runs helm template on helm/users as release "users" in
// namespace "platform", and returns the manifests or helm's error output.
// Relative values files in args are taken from the chart's directory.
func Template(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(Helm(t), append([]string{"template", "users", ".", "--namespace", "platform"}, args...)...)
	cmd.Dir = Path(t, "helm", "users")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm template %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
