package main

import (
	"fmt"
	"time"
)

// healthIntervalOverride, when a build sets it, replaces healthInterval:
//
//	go build -ldflags=-X=main.healthIntervalOverride=500ms
//
// The process tests build the binary so, and a change of the database's
// health shows in a fraction of a second instead of after the 2s that
// ships. A release build leaves it empty. It is a string because -X sets
// only strings.
var healthIntervalOverride string

func init() {
	if healthIntervalOverride == "" {
		return
	}
	d, err := time.ParseDuration(healthIntervalOverride)
	if err != nil || d <= 0 {
		panic(fmt.Sprintf("main.healthIntervalOverride=%q, set at build time, is not a positive duration", healthIntervalOverride))
	}
	healthInterval = d
}
