package dockerfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"sigs.k8s.io/yaml"

	"github.com/agynio/users/tools/deploy/internal/repo"
)

// The image's binary is stamped with the commit it was built from, which
// Go cannot read itself there (.dockerignore leaves .git out): the
// Dockerfile takes it as the build argument COMMIT, and both ways of
// building a release, "make image" and the release workflow, pass it.

const (
	// commitFlag is the -ldflags part that stamps the commit.
	commitFlag = "-X github.com/agynio/users/internal/buildinfo.Commit=$COMMIT"
	// makeCommitArg is how "make image" passes HEAD's commit.
	makeCommitArg = "--build-arg COMMIT=$$(git rev-parse HEAD)"
	// workflowCommitArg is how the release workflow passes its commit.
	workflowCommitArg = "COMMIT=${{ github.sha }}"
)

// TestCommitStamped: the repository's Dockerfile, Makefile and release
// workflow stamp the image with its commit.
func TestCommitStamped(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		file  string
		check func([]byte) error
	}{
		{"Dockerfile", checkDockerfileCommit},
		{"Makefile", checkMakeImageCommit},
		{".github/workflows/release.yaml", checkReleaseCommit},
	} {
		src, err := os.ReadFile(repo.Path(t, strings.Split(c.file, "/")...))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.check(src); err != nil {
			t.Errorf("%s: %v", c.file, err)
		}
	}
}

// TestCommitStampFails: each check finds what it is there for.
func TestCommitStampFails(t *testing.T) {
	t.Parallel()
	const dockerfile = `FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
%s
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "%s" -o /out/users ./cmd/users
FROM scratch
%s
COPY --from=build /out/users /users
USER 65532
`
	for _, tc := range []struct {
		name  string
		check func([]byte) error
		src   string
		want  string
	}{
		{
			name:  "a Dockerfile with no ARG COMMIT in the build stage",
			check: checkDockerfileCommit,
			src: fmt.Sprintf(dockerfile, "", commitFlag, `ARG COMMIT
LABEL org.opencontainers.image.revision="$COMMIT"`),
			want: "declares no ARG COMMIT",
		},
		{
			name:  "a Dockerfile that does not stamp the commit",
			check: checkDockerfileCommit,
			src: fmt.Sprintf(dockerfile, "ARG COMMIT", "-s -w", `ARG COMMIT
LABEL org.opencontainers.image.revision="$COMMIT"`),
			want: "does not stamp",
		},
		{
			name:  "a Dockerfile whose image has no revision label",
			check: checkDockerfileCommit,
			src:   fmt.Sprintf(dockerfile, "ARG COMMIT", commitFlag, ""),
			want:  "org.opencontainers.image.revision",
		},
		{
			name:  "a Makefile whose image target passes no COMMIT",
			check: checkMakeImageCommit,
			src:   "image: ## Build.\n\tdocker buildx build --build-arg VERSION=$(VERSION) \\\n\t  --push .\n\nother:\n\t" + makeCommitArg + "\n",
			want:  "does not pass",
		},
		{
			name:  "a Makefile with no image target",
			check: checkMakeImageCommit,
			src:   "build:\n\tgo build ./...\n",
			want:  "no image target",
		},
		{
			name:  "a release workflow that passes VERSION only",
			check: checkReleaseCommit,
			src: `jobs:
  image:
    steps:
      - uses: docker/build-push-action@v7
        with:
          build-args: VERSION=${{ github.ref_name }}
`,
			want: "does not pass",
		},
		{
			name:  "a release workflow that does not build the image",
			check: checkReleaseCommit,
			src:   "jobs:\n  image:\n    steps:\n      - run: make\n",
			want:  "no docker/build-push-action step",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.check([]byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// checkDockerfileCommit: the RUN that builds /out/users declares ARG
// COMMIT in its stage before it and stamps it with commitFlag, and the
// final stage labels the image with it.
func checkDockerfileCommit(src []byte) error {
	f, err := Parse(src)
	if err != nil {
		return err
	}
	found := false
	for _, s := range f.Stages {
		declared := false
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.ArgCommand:
				for _, a := range c.Args {
					declared = declared || a.Key == "COMMIT"
				}
			case *instructions.RunCommand:
				cmd := unbrace(strings.Join(c.CmdLine, " "))
				if !strings.Contains(cmd, "-o /out/users ") {
					continue
				}
				found = true
				if !declared {
					return fmt.Errorf("stage %s declares no ARG COMMIT before it builds /out/users", s.Name)
				}
				if !strings.Contains(cmd, commitFlag) {
					return fmt.Errorf("stage %s does not stamp the commit: no %s in the -ldflags of /out/users", s.Name, commitFlag)
				}
			}
		}
	}
	if !found {
		return errors.New("no RUN builds /out/users")
	}
	final := f.Stages[len(f.Stages)-1]
	declared := false
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				declared = declared || a.Key == "COMMIT"
			}
		case *instructions.LabelCommand:
			for _, l := range c.Labels {
				if l.Key == "org.opencontainers.image.revision" && declared && unbrace(strings.Trim(l.Value, `"`)) == "$COMMIT" {
					return nil
				}
			}
		}
	}
	return errors.New(`the final stage does not label the image org.opencontainers.image.revision="$COMMIT" (after ARG COMMIT)`)
}

// checkMakeImageCommit: the recipe of the Makefile's image target, its
// tab-led lines after "image:", passes makeCommitArg.
func checkMakeImageCommit(src []byte) error {
	_, rest, ok := strings.Cut("\n"+string(src), "\nimage:")
	if !ok {
		return errors.New("no image target")
	}
	var recipe []string
	for _, line := range strings.Split(rest, "\n")[1:] {
		if !strings.HasPrefix(line, "\t") {
			break
		}
		recipe = append(recipe, strings.TrimSuffix(strings.TrimSpace(line), "\\"))
	}
	if !strings.Contains(strings.Join(recipe, " "), makeCommitArg) {
		return fmt.Errorf("the image target does not pass %s", makeCommitArg)
	}
	return nil
}

// checkReleaseCommit: every docker/build-push-action step of the workflow
// passes workflowCommitArg in its build-args, and there is one.
func checkReleaseCommit(src []byte) error {
	var wf struct {
		Jobs map[string]struct {
			Steps []struct {
				Uses string         `json:"uses"`
				With map[string]any `json:"with"`
			} `json:"steps"`
		} `json:"jobs"`
	}
	if err := yaml.Unmarshal(src, &wf); err != nil {
		return err
	}
	found := false
	for name, job := range wf.Jobs {
		for _, step := range job.Steps {
			if !strings.HasPrefix(step.Uses, "docker/build-push-action@") {
				continue
			}
			found = true
			args, _ := step.With["build-args"].(string)
			if !containsLine(strings.Split(args, "\n"), workflowCommitArg) {
				return fmt.Errorf("job %s: %s does not pass %s in build-args", name, step.Uses, workflowCommitArg)
			}
		}
	}
	if !found {
		return errors.New("no docker/build-push-action step")
	}
	return nil
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}
