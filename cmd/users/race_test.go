//go:build race

package main

// Under go test -race the binary is built with -race too, so a data race in
// the server (its shutdown path above all) makes it exit 66 instead of 0.
func init() { buildFlags = append(buildFlags, "-race") }
