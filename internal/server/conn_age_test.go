package server_test

import (
	"log/slog"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/agynio/users/internal/server"
)

// A connection is sent GOAWAY once it reaches its maximum age, so that its
// client connects again, possibly to a newer replica; without the age, a
// client stays on the replica it first reached for as long as it runs.
func TestConnectionGetsGoAwayAtMaxAge(t *testing.T) {
	t.Parallel()
	const age = 500 * time.Millisecond
	addr := serveTCP(t, slog.New(slog.DiscardHandler), server.WithMaxConnectionAge(age, time.Second))
	start := time.Now() // before the dial: the connection is no older than this
	fr := dialHTTP2(t, addr)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY within 10s of a %s maximum age: %v", age, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck() //nolint:errcheck // the server may hang up
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data) //nolint:errcheck // the server may hang up
			}
		case *http2.GoAwayFrame:
			// gRPC varies the age by up to 10% either way.
			if elapsed := time.Since(start); elapsed < age*9/10 {
				t.Errorf("GOAWAY %s after connecting, before the maximum age (%s)", elapsed, age)
			}
			if f.ErrCode != http2.ErrCodeNo {
				t.Errorf("GOAWAY %v, want NO_ERROR (a graceful one)", f.ErrCode)
			}
			return
		}
	}
}
