package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agynio/users/internal/config"
)

// setting is an environment variable as documented: its name and default.
type setting struct{ Name, Default string }

// TestHelp: help, in each of its spellings, needs no configuration and
// prints every command, then every variable of config.Variables with its
// default, in lines that fit a terminal.
func TestHelp(t *testing.T) {
	t.Parallel()
	var want []setting
	for _, v := range config.Variables {
		want = append(want, setting{v.Name, v.DefaultText()})
	}
	for _, arg := range []string{"help", "-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			res := runUsers(t, map[string]string{}, arg)
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("users %s: exit code %d, stderr %q; want 0 and nothing", arg, res.code, res.stderr)
			}
			for _, c := range []string{"serve", "migrate up", "migrate down", "migrate down --force", "migrate status", "version", "help"} {
				if !strings.Contains(res.stdout, "\n  "+c+" ") {
					t.Errorf("help has no line for %q:\n%s", c, res.stdout)
				}
			}
			if diff := cmp.Diff(want, helpSettings(t, res.stdout)); diff != "" {
				t.Errorf("help's variables are not config.Variables (-want +got):\n%s", diff)
			}
			for _, line := range strings.Split(res.stdout, "\n") {
				if len(line) > helpWidth {
					t.Errorf("line wider than %d columns: %q", helpWidth, line)
				}
			}
		})
	}
}

// TestREADMEConfiguration: the README's Configuration table documents the
// variables "users -h" does, in its order and with its defaults; the
// meanings may say more in the README.
func TestREADMEConfiguration(t *testing.T) {
	t.Parallel()
	res := runUsers(t, map[string]string{}, "-h")
	if res.code != 0 {
		t.Fatalf("users -h: exit code %d\nstderr:\n%s", res.code, res.stderr)
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(helpSettings(t, res.stdout), readmeSettings(t, string(src))); diff != "" {
		t.Errorf("README.md's Configuration table is not users -h (-users -h +README):\n%s", diff)
	}
}

// TestREADMEHelpExcerpt: the beginning of "users -h" the README shows is
// what the program prints: its lines, "..." standing for those left out,
// come in the output in that order.
func TestREADMEHelpExcerpt(t *testing.T) {
	t.Parallel()
	res := runUsers(t, map[string]string{}, "-h")
	if res.code != 0 {
		t.Fatalf("users -h: exit code %d\nstderr:\n%s", res.code, res.stderr)
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(src), "```console\n$ users -h\n")
	block, _, closed := strings.Cut(block, "```")
	if !ok || !closed {
		t.Fatal("README.md shows no ```console block of $ users -h")
	}
	out := strings.Split(res.stdout, "\n")
	next := 0 // the first output line the next README line may match
	for line := range strings.Lines(block) {
		line = strings.TrimSuffix(line, "\n")
		if strings.TrimSpace(line) == "..." {
			continue
		}
		i := slices.Index(out[next:], line)
		if i < 0 {
			t.Fatalf("README.md's users -h shows %q, which users -h does not print after line %d:\n%s", line, next, res.stdout)
		}
		next += i + 1
	}
}

// helpSettings parses the environment part of help: each variable is a
// line "  NAME  default", its meaning indented further below.
func helpSettings(t *testing.T, help string) []setting {
	t.Helper()
	_, env, ok := strings.Cut(help, "\nEnvironment")
	if !ok {
		t.Fatalf("help has no Environment part:\n%s", help)
	}
	var got []setting
	for _, line := range strings.Split(env, "\n")[1:] {
		rest, ok := strings.CutPrefix(line, "  ")
		if !ok || strings.HasPrefix(rest, " ") {
			continue
		}
		name, def, _ := strings.Cut(rest, " ")
		got = append(got, setting{name, strings.TrimSpace(def)})
	}
	return got
}

// readmeSettings parses the table under README's "## Configuration": rows
// "| `NAME`[, `NAME2`] | default | meaning |", a default in backticks
// when it is a value.
func readmeSettings(t *testing.T, readme string) []setting {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no ## Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	unquote := func(s string) string { return strings.TrimSpace(strings.ReplaceAll(s, "`", "")) }
	var got []setting
	inTable := false
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break // the first table only
			}
			continue
		}
		inTable = true
		cells := strings.SplitN(line, "|", 4)
		if len(cells) < 4 || unquote(cells[1]) == "Variable" || strings.HasPrefix(cells[1], "---") {
			continue
		}
		for _, name := range strings.Split(cells[1], ",") {
			got = append(got, setting{unquote(name), unquote(cells[2])})
		}
	}
	if len(got) == 0 {
		t.Fatal("README.md's Configuration section has no table of variables")
	}
	return got
}

// TestVersion: "users version" prints the stamped version and commit, and
// without a stamp "dev" and what the build knows of its commit: the VCS
// revision Go records in a git checkout, nothing (as in the image, whose
// build context has no .git) without one.
func TestVersion(t *testing.T) {
	t.Parallel()
	const pkg = "github.com/agynio/users/internal/buildinfo"
	goVersion := runtime.Version()
	t.Run("stamped", func(t *testing.T) {
		t.Parallel()
		bin := buildVariant(t, "-ldflags", "-X "+pkg+".Version=v9.9.9 -X "+pkg+".Commit=abc")
		checkVersion(t, bin, "users v9.9.9 commit abc "+goVersion)
	})
	t.Run("no VCS information", func(t *testing.T) {
		t.Parallel()
		bin := buildVariant(t, "-buildvcs=false")
		checkVersion(t, bin, "users dev commit unknown "+goVersion)
	})
	t.Run("the VCS revision", func(t *testing.T) {
		t.Parallel()
		head, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Skipf("not a git checkout (git rev-parse HEAD: %v): no VCS revision to record", err)
		}
		// Go calls a tree with any change, untracked files included, modified.
		status, err := exec.Command("git", "status", "--porcelain").Output()
		if err != nil {
			t.Fatal(err)
		}
		rev := strings.TrimSpace(string(head))
		if len(status) > 0 {
			rev += "-dirty"
		}
		bin := buildVariant(t, "-buildvcs=true")
		checkVersion(t, bin, "users dev commit "+rev+" "+goVersion)
	})
}

// buildVariant builds this package with extra go build flags into a
// directory of t's.
func buildVariant(t *testing.T, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "users")
	args := append(append(append([]string{"build"}, buildFlags...), flags...), "-o", out, ".")
	if b, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// checkVersion runs "bin version" and holds its output to want.
func checkVersion(t *testing.T, bin, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "version")
	cmd.Env = []string{} // needs no configuration
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	if got := strings.TrimSuffix(string(out), "\n"); got != want {
		t.Errorf("users version = %q, want %q", got, want)
	}
}
