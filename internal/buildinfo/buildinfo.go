// Package buildinfo says which build of the service is running. The
// release build stamps Version with
//
//	-ldflags "-X github.com/agynio/users/internal/buildinfo.Version=v1.2.3"
//
// (the Dockerfile does); a plain go build leaves it "dev" and the revision
// comes from the VCS stamp Go records on its own.
package buildinfo

import "runtime/debug"

// Version is the release this binary was built from.
var Version = "dev"

// Revision is the VCS commit the binary was built from, or "unknown".
func Revision() string {
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
