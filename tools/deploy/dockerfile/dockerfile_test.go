package dockerfile

import (
	"errors"
	"go/version"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/agynio/users/tools/deploy/internal/repo"
)

// TestRepositoryDockerfile: the image's Dockerfile keeps every rule, and
// builds what the chart runs.
func TestRepositoryDockerfile(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(repo.Path(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(Check(src)...); err != nil {
		t.Errorf("Dockerfile:\n%v", err)
	}
	f, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}

	final := f.Stages[len(f.Stages)-1]
	var entrypoint, cmd []string
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.EntrypointCommand:
			entrypoint = c.CmdLine
		case *instructions.CmdCommand:
			cmd = c.CmdLine
		}
	}
	if strings.Join(entrypoint, " ") != "/users" || strings.Join(cmd, " ") != "serve" {
		t.Errorf(`final stage: ENTRYPOINT %q CMD %q, want ["/users"] ["serve"]: the chart runs "serve" and "migrate up" as arguments`, entrypoint, cmd)
	}
	if !strings.Contains(string(src), "-X github.com/agynio/users/internal/buildinfo.Version=$VERSION") {
		t.Errorf("the build does not stamp internal/buildinfo.Version from the VERSION build argument")
	}
	if !hasStage(f, "e2e") {
		t.Errorf("no e2e stage: devspace.yaml builds the end-to-end test image from it")
	}
	checkGoVersion(t, f)
}

// checkGoVersion: the golang image must be at least as new as go.mod's go
// line, since the image does not download a newer toolchain
// (GOTOOLCHAIN=local).
func checkGoVersion(t *testing.T, f *File) {
	t.Helper()
	mod, err := os.ReadFile(repo.Path(t, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	want := "go" + string(m[1])
	found := false
	for _, s := range f.Stages {
		tag, ok := strings.CutPrefix(s.BaseName, "golang:")
		if !ok {
			continue
		}
		found = true
		have := "go" + strings.SplitN(tag, "-", 2)[0]
		if !version.IsValid(have) || version.Compare(have, want) < 0 {
			t.Errorf("FROM %s: Go %s is older than go.mod's %s", s.BaseName, have, want)
		}
	}
	if !found {
		t.Error("no golang build stage")
	}
}

func hasStage(f *File, name string) bool {
	for _, s := range f.Stages {
		if s.Name == name {
			return true
		}
	}
	return false
}

// TestCheckerFails: the checker finds each broken rule of the fixtures,
// so a green run means something.
func TestCheckerFails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		want []string
	}{
		{
			file: "bad.Dockerfile",
			want: []string{
				`stage build: base image "golang:latest" is :latest`,
				`stage tools: base image "alpine" has no tag`,
				"ADD https://example.com/tool.tar.gz fetches from the network",
				"does not run on the builder's platform",
				"no GOOS=$TARGETOS",
				"no GOARCH=$TARGETARCH",
				"no -trimpath",
				"no CGO_ENABLED=0",
				"no cache mount at /go/pkg/mod",
				"no cache mount at /root/.cache/go-build",
				"final stage: USER nobody is not numeric",
			},
		},
		{
			file: "single-stage.Dockerfile",
			want: []string{"single-stage", "final stage: USER 0:0 is root"},
		},
		{
			file: "lint.Dockerfile",
			want: []string{"FromAsCasing", "JSONArgsRecommended", "UndefinedVar"},
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile("testdata/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			got := errors.Join(Check(src)...)
			if got == nil {
				t.Fatal("no problem found")
			}
			for _, want := range tc.want {
				if !strings.Contains(got.Error(), want) {
					t.Errorf("no problem mentions %q; found:\n%v", want, got)
				}
			}
		})
	}
}
