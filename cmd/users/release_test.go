package main

// The previous release, found in the git history and built from it, for
// the test that it serves against this tree's schema (upgrade_test.go).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// migrationFiles are the migrations, as a git pathspec from the top of
// the clone (git runs in the package's directory).
const migrationFiles = ":(top)sql/migrations/*.sql"

// previousRelease returns the commit that a rollback of this tree's
// release goes back to, and how it was chosen.
//
// A release is a v* tag (release.yaml publishes one per tag), so it is the
// newest v* tag among HEAD's ancestors, a tag on HEAD itself left out:
// that is the release HEAD's replaces. Before the first tag there is no
// release yet, and what a rollback puts at risk is the schema: then it is
// the commit before the newest migration was added, the last binary that
// served the schema without it, the one that a rollback across the latest
// schema change runs. (First-parent history: a branch merged with its
// migration counts as one change, and the commit before is main's.) Both
// are read from the history alone, so every clone that has it finds the
// same commit; a shallow clone does not have it, and fails, saying what
// to fetch.
func previousRelease(t *testing.T) (rev, why string) {
	t.Helper()
	shallow, err := git("rev-parse", "--is-shallow-repository")
	if err != nil {
		t.Fatalf("upgrade: the previous release is built from the git history, and this is no git clone (%v): test a clone of the repository", err)
	}
	if shallow == "true" {
		t.Fatal("upgrade: a shallow clone lacks the history the previous release is built from: " +
			"'git fetch --unshallow origin' (actions/checkout: fetch-depth: 0)")
	}
	if _, err := git("rev-parse", "-q", "--verify", "HEAD^{commit}"); err != nil {
		t.Fatalf("upgrade: no commit checked out: %v", err)
	}
	if tag, err := git("describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", "HEAD^"); err == nil && tag != "" {
		rev, err := git("rev-parse", tag+"^{commit}")
		if err != nil {
			t.Fatal(err)
		}
		return rev, "the newest release tag before HEAD, " + tag
	}
	added, err := git("log", "--first-parent", "--diff-filter=A", "-1", "--format=%H", "--", migrationFiles)
	if err != nil || added == "" {
		t.Fatalf("upgrade: no commit added a migration (%v)", err)
	}
	rev, err = git("rev-parse", "-q", "--verify", added+"^1")
	if err != nil {
		t.Skipf("no release before %.12s, which added the first migrations: nothing to roll back to", added)
	}
	newest, err := git("log", "-1", "--format=%h %s", added)
	if err != nil {
		t.Fatal(err)
	}
	return rev, fmt.Sprintf("no release tag yet: the commit before the newest migration came (%s)", newest)
}

// git runs git in the package's directory, inside the clone, and returns
// its output trimmed.
func git(args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// buildRelease builds rev's cmd/users from the history, into a directory
// removed when t ends, and returns the binary. The tree comes out of git
// archive, so the clone is left as it was (no worktree to prune after a
// test that was killed). No -race: it is the old release's process, not
// this tree's code, that is under test, and without it the build reuses
// the dependencies that make build compiled. It costs a build of the
// repository's own packages, about a minute on 2 cores.
func buildRelease(t *testing.T, rev string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	top, err := git("rev-parse", "--show-toplevel")
	if err != nil {
		t.Fatal(err)
	}
	// From the top: in a subdirectory git archive takes only its subtree.
	tarball := filepath.Join(dir, "src.tar")
	for _, args := range [][]string{
		{"git", "-C", top, "archive", "--format=tar", "-o", tarball, rev},
		{"tar", "-x", "-f", tarball, "-C", src},
	} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	bin := filepath.Join(dir, "users")
	build := exec.CommandContext(ctx, "go", "build", "-buildvcs=false", "-o", bin, "./cmd/users")
	build.Dir = src
	// Its own go.mod, whatever the environment says about modules.
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	var out bytes.Buffer
	build.Stdout, build.Stderr = &out, &out
	start := time.Now()
	if err := build.Run(); err != nil {
		t.Fatalf("go build ./cmd/users at %.12s: %v\n%s", rev, err, &out)
	}
	t.Logf("built the previous release, %.12s, in %s", rev, time.Since(start).Round(time.Second))
	return bin
}

// rpcPattern finds a proto file's RPCs.
var rpcPattern = regexp.MustCompile(`(?m)^\s*rpc\s+(\w+)\s*\(`)

// releaseRPCs returns the UsersService RPCs that rev's proto declares.
func releaseRPCs(t *testing.T, rev string) []string {
	t.Helper()
	proto, err := git("show", rev+":proto/agynio/api/users/v1/users.proto")
	if err != nil {
		t.Fatal(err)
	}
	var rpcs []string
	for _, m := range rpcPattern.FindAllStringSubmatch(proto, -1) {
		rpcs = append(rpcs, m[1])
	}
	if len(rpcs) == 0 {
		t.Fatalf("no rpc in the proto at %.12s", rev)
	}
	slices.Sort(rpcs)
	return rpcs
}
