package chart

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agynio/users/tools/deploy/internal/repo"
)

// TestPackage: helm package keeps what the templates read with .Files.Get
// (the dashboard: an .helmignore pattern dropping it would render an empty
// ConfigMap from the published chart alone), and leaves out the examples,
// which sit beside the chart for the README only, and metrics.txt, which
// only the checks read.
func TestPackage(t *testing.T) {
	t.Parallel()
	names := packagedFiles(t)
	for _, want := range []string{"users/dashboards/users.json", "users/templates/grafana-dashboard.yaml", "users/templates/prometheusrule.yaml"} {
		if !slices.Contains(names, want) {
			t.Errorf("the packaged chart lacks %s; it holds %v", want, names)
		}
	}
	for _, name := range names {
		if strings.Contains(name, "/examples/") || name == "users/metrics.txt" {
			t.Errorf("the packaged chart holds %s", name)
		}
	}
}

// packagedFiles runs helm package on the chart and lists the archive.
func packagedFiles(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(repo.Helm(t), "package", ".", "--destination", dir)
	cmd.Dir = repo.Path(t, "helm", "users")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm package: %v\n%s", err, out)
	}
	archives, err := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if err != nil || len(archives) != 1 {
		t.Fatalf("helm package wrote %v (%v), want one archive", archives, err)
	}
	f, err := os.Open(archives[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if len(names) == 0 {
		t.Fatal("the packaged chart is empty")
	}
	return names
}
