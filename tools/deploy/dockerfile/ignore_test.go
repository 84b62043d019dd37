package dockerfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"

	"github.com/agynio/users/tools/deploy/internal/repo"
)

// TestDockerignore: the build context the Dockerfile reads holds every file
// the image's builds compile or embed, and none of what they do not need.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(repo.Path(t, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ig, err := ParseIgnore(src)
	if err != nil {
		t.Fatal(err)
	}

	// The service binary, and the e2e test binary of the e2e stage.
	needed := append([]string{"go.mod", "go.sum"}, buildFiles(t, false, "./cmd/users")...)
	needed = append(needed, buildFiles(t, true, "-tags", "e2e", "./e2e")...)
	for _, p := range needed {
		if out, err := ig.Excludes(p); err != nil || out {
			t.Errorf("%s is needed by the image build but .dockerignore leaves it out (%v)", p, err)
		}
	}
	for _, p := range []string{".git/HEAD", "bin/users", "helm/users/Chart.yaml", "tools/go.mod", "README.md", "cmd/users/serve_test.go", "devspace.yaml"} {
		if out, err := ig.Excludes(p); err != nil || !out {
			t.Errorf("%s is not needed by the image build but .dockerignore lets it in (%v)", p, err)
		}
	}
}

// buildFiles lists, relative to the repository root, the Go and embedded
// files of this module that building args needs, and with tests the test
// files of the packages args names (not those of their dependencies).
func buildFiles(t *testing.T, tests bool, args ...string) []string {
	t.Helper()
	root := repo.Root(t)
	cmd := exec.Command("go", append([]string{"list", "-deps", "-json"}, args...)...)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	var files []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var pkg struct {
			Dir                                       string
			DepOnly                                   bool
			Module                                    *struct{ Path string }
			GoFiles, EmbedFiles, CgoFiles             []string
			TestGoFiles, XTestGoFiles, TestEmbedFiles []string
		}
		if err := dec.Decode(&pkg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if pkg.Module == nil || pkg.Module.Path != "github.com/agynio/users" {
			continue
		}
		rel, err := filepath.Rel(root, pkg.Dir)
		if err != nil {
			t.Fatal(err)
		}
		groups := [][]string{pkg.GoFiles, pkg.EmbedFiles, pkg.CgoFiles}
		if tests && !pkg.DepOnly {
			groups = append(groups, pkg.TestGoFiles, pkg.XTestGoFiles, pkg.TestEmbedFiles)
		}
		for _, group := range groups {
			for _, f := range group {
				files = append(files, path.Join(filepath.ToSlash(rel), f))
			}
		}
	}
	if len(files) == 0 {
		t.Fatalf("go list %v: no file of the module", args)
	}
	return files
}
