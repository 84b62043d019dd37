// Package dockerfile checks a Go service's Dockerfile without a Docker
// engine: it parses it with BuildKit's own Dockerfile frontend (the parser
// and linter "docker build" uses) and holds it to the rules below, which
// BuildKit's linter has none of. hadolint, which has the first three, is
// neither in Debian nor in the Go module proxy.
//
//   - BuildKit's linter (docker build --check) reports nothing.
//   - It is multi-stage.
//   - Every base image is pinned by tag or digest: no untagged image, no
//     :latest, no image named through a build argument.
//   - No ADD fetches a URL (nothing unchecked comes from the network).
//   - The final stage runs as a numeric, non-root USER, so that
//     Kubernetes' runAsNonRoot can verify it.
//   - Every stage that compiles Go runs on $BUILDPLATFORM (or derives from
//     one that does) and cross-compiles for $TARGETOS/$TARGETARCH with
//     CGO_ENABLED=0 and -trimpath, with the module and build caches as
//     cache mounts.
package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// File is a parsed Dockerfile.
type File struct {
	Stages []instructions.Stage
}

// Parse parses src with BuildKit's parser.
func Parse(src []byte) (*File, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, err
	}
	return &File{Stages: stages}, nil
}

// Check returns everything wrong with src: what BuildKit's linter finds
// (docker build --check), then every rule of this package it breaks.
func Check(src []byte) []error {
	findings, err := Lint(src)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, f := range findings {
		errs = append(errs, errors.New(f))
	}
	f, err := Parse(src)
	if err != nil {
		return append(errs, err)
	}
	return append(errs, f.Check()...)
}

// Check returns every rule the file breaks.
func (f *File) Check() []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(f.Stages) < 2 {
		fail("single-stage: build in one stage and copy the binary into a minimal final one")
	}
	for i, s := range f.Stages {
		if f.stageIndex(s.BaseName, i) >= 0 {
			continue
		}
		if err := checkPinned(s.BaseName); err != nil {
			fail("stage %s: %v", stageName(s, i), err)
		}
	}
	for i, s := range f.Stages {
		for _, c := range s.Commands {
			if add, ok := c.(*instructions.AddCommand); ok {
				for _, src := range add.SourcePaths {
					if isRemote(src) {
						fail("stage %s: ADD %s fetches from the network: download in a RUN that checks a digest, or COPY", stageName(s, i), src)
					}
				}
			}
			if run, ok := c.(*instructions.RunCommand); ok && compilesGo(run) {
				errs = append(errs, f.checkGoBuild(i, run)...)
			}
		}
	}
	if len(f.Stages) > 0 {
		final := f.Stages[len(f.Stages)-1]
		if err := checkUser(final); err != nil {
			fail("final stage: %v", err)
		}
	}
	return errs
}

// stageIndex returns the index of the stage named name before stage
// before, or -1 when name is not a stage (then it is an image).
func (f *File) stageIndex(name string, before int) int {
	for i := 0; i < before; i++ {
		if f.Stages[i].Name != "" && strings.EqualFold(f.Stages[i].Name, name) {
			return i
		}
	}
	return -1
}

func stageName(s instructions.Stage, i int) string {
	if s.Name != "" {
		return s.Name
	}
	return strconv.Itoa(i)
}

// checkPinned: a tag other than latest, or a digest.
func checkPinned(image string) error {
	if image == "scratch" {
		return nil
	}
	if strings.Contains(image, "$") {
		return fmt.Errorf("base image %q comes from a build argument: name it literally so that it can be checked", image)
	}
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return fmt.Errorf("base image %q: %v", image, err)
	}
	if _, ok := ref.(reference.Digested); ok {
		return nil
	}
	tagged, ok := ref.(reference.Tagged)
	if !ok {
		return fmt.Errorf("base image %q has no tag: pin it (e.g. %s:1.2.3)", image, image)
	}
	if tagged.Tag() == "latest" {
		return fmt.Errorf("base image %q is :latest: pin a version", image)
	}
	return nil
}

func isRemote(src string) bool {
	s := strings.ToLower(src)
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") ||
		strings.HasPrefix(s, "git@") || strings.HasPrefix(s, "git://")
}

// uidGID is a numeric USER: uid, or uid:gid.
var uidGID = regexp.MustCompile(`^([0-9]+)(:[0-9]+)?$`)

// checkUser: the stage's last USER must be numeric and not root.
func checkUser(s instructions.Stage) error {
	user := ""
	for _, c := range s.Commands {
		if u, ok := c.(*instructions.UserCommand); ok {
			user = u.User
		}
	}
	if user == "" {
		return errors.New("no USER: the image would run as root")
	}
	m := uidGID.FindStringSubmatch(user)
	if m == nil {
		return fmt.Errorf("USER %s is not numeric: Kubernetes' runAsNonRoot cannot verify a name", user)
	}
	if m[1] == "0" {
		return fmt.Errorf("USER %s is root", user)
	}
	return nil
}

var goCompile = regexp.MustCompile(`\bgo\s+(build|install|test\s+(.*\s)?-c)\b`)

func compilesGo(run *instructions.RunCommand) bool {
	return goCompile.MatchString(strings.Join(run.CmdLine, " "))
}

// checkGoBuild holds a RUN that compiles Go to the cross-compilation rules.
func (f *File) checkGoBuild(stage int, run *instructions.RunCommand) []error {
	var errs []error
	name := stageName(f.Stages[stage], stage)
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("stage %s, RUN %s: %s", name, firstLine(run), fmt.Sprintf(format, args...)))
	}
	if !f.onBuildPlatform(stage) {
		fail("compiles Go but does not run on the builder's platform: FROM --platform=$BUILDPLATFORM, and cross-compile")
	}
	cmd := unbrace(strings.Join(run.CmdLine, " "))
	env := f.env(stage)
	for _, want := range []struct{ text, why string }{
		{"GOOS=$TARGETOS", "cross-compile for the target's OS"},
		{"GOARCH=$TARGETARCH", "cross-compile for the target's architecture"},
		{"-trimpath", "keep the builder's paths out of the binary"},
	} {
		if !strings.Contains(cmd, want.text) {
			fail("no %s (%s)", want.text, want.why)
		}
	}
	if !strings.Contains(cmd, "CGO_ENABLED=0") && env["CGO_ENABLED"] != "0" {
		fail("no CGO_ENABLED=0: the binary must be static for a distroless or scratch image")
	}
	// The --mount flags are parsed when the command is expanded; nothing
	// is substituted here.
	if err := run.Expand(func(word string) (string, error) { return word, nil }); err != nil {
		fail("%v", err)
	}
	mounts := map[string]bool{}
	for _, m := range instructions.GetMounts(run) {
		if m.Type == instructions.MountTypeCache {
			mounts[m.Target] = true
		}
	}
	for _, target := range []string{"/go/pkg/mod", "/root/.cache/go-build"} {
		if !mounts[target] {
			fail("no cache mount at %s (RUN --mount=type=cache,target=%s)", target, target)
		}
	}
	return errs
}

// onBuildPlatform reports whether a stage runs on $BUILDPLATFORM, itself
// or through the stage it derives from.
func (f *File) onBuildPlatform(stage int) bool {
	s := f.Stages[stage]
	switch unbrace(s.Platform) {
	case "$BUILDPLATFORM":
		return true
	case "":
		if base := f.stageIndex(s.BaseName, stage); base >= 0 {
			return f.onBuildPlatform(base)
		}
	}
	return false
}

// env returns the ENV a stage has set, its base stages' included.
func (f *File) env(stage int) map[string]string {
	env := map[string]string{}
	if base := f.stageIndex(f.Stages[stage].BaseName, stage); base >= 0 {
		env = f.env(base)
	}
	for _, c := range f.Stages[stage].Commands {
		if e, ok := c.(*instructions.EnvCommand); ok {
			for _, kv := range e.Env {
				env[kv.Key] = kv.Value
			}
		}
	}
	return env
}

// unbrace writes ${VAR} as $VAR, so that either spelling matches.
func unbrace(s string) string {
	return strings.NewReplacer("${", "$", "}", "").Replace(s)
}

func firstLine(run *instructions.RunCommand) string {
	s := strings.Join(run.CmdLine, " ")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return s
}
