package buildinfo

import "testing"

// TestRevisionPrefersCommit: a stamped Commit is the revision, whatever
// VCS information the build recorded (the process tests of cmd/users
// cover the unstamped builds).
func TestRevisionPrefersCommit(t *testing.T) {
	defer func(c string) { Commit = c }(Commit)
	Commit = "0123abcd"
	if got := Revision(); got != "0123abcd" {
		t.Errorf("Revision() = %q, want the stamped Commit %q", got, "0123abcd")
	}
}
