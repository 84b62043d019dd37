// Package natstest runs a throwaway NATS server with JetStream for tests:
// the official server, in the test's own process, on a loopback port,
// storing in a temporary folder. It can be stopped and started again on
// the same port and store, as a NATS outage would.
package natstest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a NATS server with JetStream.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// Start starts a server, which the test's cleanup stops.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, opts: server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	s.start()
	// The same port on a restart, so that clients reconnect to it.
	_, port, _ := net.SplitHostPort(s.srv.Addr().String())
	s.opts.Port, _ = strconv.Atoi(port)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("NATS server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("NATS server not ready within 10s")
	}
	s.srv = srv
}

// URL is the server's client URL.
func (s *Server) URL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port)
}

// Stop shuts the server down; a stopped server stays stopped.
func (s *Server) Stop() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// Restart starts a stopped server again, on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// JetStream connects a client to the server; the test's cleanup closes it.
func (s *Server) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatalf("NATS client: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Read reads the messages of stream from its first, through a consumer of
// its own, until it has read want of them or timeout has passed, and then
// for settle more: a message beyond the wanted ones, which ought not to
// be there, is read too. It fails the test if the stream does not exist
// by then.
func (s *Server) Read(t testing.TB, stream string, want int, timeout, settle time.Duration) []jetstream.Msg {
	t.Helper()
	js := s.JetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), timeout+settle)
	defer cancel()
	var cons jetstream.Consumer
	for {
		var err error
		if cons, err = js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{}); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s: %v", stream, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	var msgs []jetstream.Msg
	deadline := time.Now().Add(timeout)
	for {
		// A fetch returns once it has its count, or at its wait: up to
		// want, the count still missing; after, any, for settle.
		wait, count := time.Until(deadline), want-len(msgs)
		if len(msgs) >= want {
			wait, count = settle, 1000
		}
		if wait <= 0 {
			return msgs
		}
		batch, err := cons.Fetch(count, jetstream.FetchMaxWait(max(wait, 10*time.Millisecond)))
		if err != nil {
			t.Fatalf("fetch from %s: %v", stream, err)
		}
		n := len(msgs)
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) >= want && len(msgs) == n {
			return msgs // settled: nothing more came
		}
	}
}
