// Command users serves agynio.api.users.v1 and migrates its database.
//
//	users [serve]                  serve gRPC (the default)
//	users migrate up|down|status   apply, roll back one, or list migrations
//	users version                  print the version and the commit
//	users help                     print the commands and the environment
//
// Configuration comes from the environment: internal/config's table of
// the variables, which "users -h" prints.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/agynio/users/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal starts a graceful shutdown, restore the default
	// handling, so that a second Ctrl-C ends the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "users:", err)
		if config.IsError(err) || isUsageError(err) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
