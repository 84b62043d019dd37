//go:build race

package main

// Under go test -race the binary is built with -race too, so a data race in
// the server (its shutdown path above all) makes it exit 66 instead of 0.
// The race detector's shadow memory about doubles what the process holds,
// so memory bounds double with it.
func init() {
	buildFlags = append(buildFlags, "-race")
	memoryFactor = 2
}
