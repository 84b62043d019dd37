package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/agynio/users/internal/buildinfo"
	"github.com/agynio/users/internal/config"
)

// usage lists the command lines, for a bad one; "migrate down --force"
// rolls back even when that deletes data, which plain "migrate down"
// refuses.
const usage = "usage: users [serve] | users migrate up|down|status | users migrate down --force | users version | users help"

// usageError is a bad command line; like a configuration error it exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg + "\n" + usage }

func isUsageError(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

// commands are the command lines help explains, one line each.
var commands = []struct{ line, meaning string }{
	{"serve", "serve gRPC, with grpc.health.v1 and reflection"},
	{"migrate up", "apply the pending migrations"},
	{"migrate down", "roll back the last migration, unless that deletes data"},
	{"migrate down --force", "roll back the last migration even if that deletes data"},
	{"migrate status", "list the migrations, applied and pending"},
	{"version", "print the version, the commit and the Go version"},
	{"help", "print this help (also -h, -help, --help)"},
}

// helpWidth is the width help wraps its text to: a terminal's.
const helpWidth = 80

// writeHelp writes the commands, then every environment variable of
// config.Variables with its default and meaning.
func writeHelp(w io.Writer) error {
	var b strings.Builder
	b.WriteString("users serves agynio.api.users.v1 over gRPC and migrates its database.\n\n")
	b.WriteString("Commands (serve when none is given):\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-22s %s\n", c.line, c.meaning)
	}
	b.WriteString("\nEnvironment, read once at start-up (a bad value exits 2, naming the variable):\n")
	nameWidth := 0
	for _, v := range config.Variables {
		nameWidth = max(nameWidth, len(v.Name))
	}
	for _, v := range config.Variables {
		fmt.Fprintf(&b, "  %-*s  %s\n", nameWidth, v.Name, v.DefaultText())
		meaning := v.Meaning
		if v.ReadBy != "" {
			meaning = "(read by " + v.ReadBy + ") " + meaning
		}
		wrap(&b, meaning, "      ", helpWidth)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap writes text as lines of at most width columns, each led by indent;
// a word longer than a line gets one of its own.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, word := range strings.Fields(text) {
		if line != indent && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
}

// writeVersion writes the version, the commit and the Go version.
func writeVersion(w io.Writer) error {
	_, err := fmt.Fprintf(w, "users %s commit %s %s\n", buildinfo.Version, buildinfo.Revision(), runtime.Version())
	return err
}
