// Command withpg runs a command against a throwaway PostgreSQL server:
//
//	withpg -- COMMAND [ARG...]
//
// It starts a server with internal/testing/pgtest (Docker if an engine
// answers, else the local PostgreSQL binaries), runs COMMAND with
// DATABASE_URL and TEST_DATABASE_URL pointing at it, and removes the server
// when COMMAND exits, so nothing is left running after a Ctrl-C. make run and make test
// use it when no DATABASE_URL is given.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/agynio/users/internal/testing/pgtest"
)

// relayed are the signals passed on to the command: those a terminal
// sends (Ctrl-C, Ctrl-\, hang-up) and those a supervisor sends.
var relayed = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

func main() {
	os.Exit(run())
}

func run() int {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withpg -- COMMAND [ARG...]")
		return 2
	}

	// Signals never end us directly: the server must be removed after the
	// command has finished with it. One that arrives while the server is
	// still starting cancels the start.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, relayed...)
	startCtx, cancelStart := context.WithCancel(context.Background())
	started := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancelStart()
		case <-started:
		}
	}()
	srv, err := pgtest.Start(startCtx, os.Stderr)
	close(started)
	if err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 1
	}
	defer srv.Close()
	fmt.Fprintf(os.Stderr, "withpg: throwaway PostgreSQL (%s) at %s\n", srv.Describe(), srv.URL)
	if startCtx.Err() != nil {
		return 130
	}

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "DATABASE_URL="+srv.URL, "TEST_DATABASE_URL="+srv.URL)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The command gets its own process group, and each signal from us
		// exactly once. Left in the terminal's group, a Ctrl-C would reach
		// it twice (from the terminal and from us), and a second signal
		// means "stop now, skip the drain" to the service.
		Setpgid: true,
		// If we are killed outright, the command is asked to stop too.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			syscall.Kill(-cmd.Process.Pid, sig.(syscall.Signal)) //nolint:errcheck // it may have exited already
		case err := <-done:
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				if code := exitErr.ExitCode(); code >= 0 {
					return code
				}
				return 1 // killed by a signal
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "withpg:", err)
				return 1
			}
			return 0
		}
	}
}
