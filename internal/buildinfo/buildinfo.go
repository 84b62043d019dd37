// Package buildinfo says which build of the service is running. The
// release build stamps Version and Commit with
//
//	-ldflags "-X github.com/agynio/users/internal/buildinfo.Version=v1.2.3
//	  -X github.com/agynio/users/internal/buildinfo.Commit=0123abcd..."
//
// (the Dockerfile does, from its VERSION and COMMIT build arguments); a
// plain go build leaves Version "dev" and the revision comes from the VCS
// stamp Go records on its own.
package buildinfo

import "runtime/debug"

// Version is the release this binary was built from.
var Version = "dev"

// Commit, when stamped, is the commit this binary was built from. The
// image needs it: its build context leaves .git out, so the Go toolchain
// records no VCS revision there.
var Commit string

// Revision is the commit the binary was built from: Commit, else the VCS
// revision Go recorded ("-dirty" when the tree had changes), else
// "unknown".
func Revision() string {
	if Commit != "" {
		return Commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, modified := "unknown", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified {
		rev += "-dirty"
	}
	return rev
}
