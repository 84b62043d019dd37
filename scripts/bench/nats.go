package main

import (
	"errors"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// startNATS runs a NATS server with JetStream in this process, on a free
// loopback port, storing its streams under dir: what the events-on
// service's relay publishes to. It shares the machine with everything
// else measured, as a NATS cluster in production would not: its CPU
// counts in the machine's figures and slows the events-on service's
// runs, never the events-off service's, so it can only lower the ratio.
func startNATS(dir string) (*natsserver.Server, error) {
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host:      "127.0.0.1",
		Port:      natsserver.RANDOM_PORT,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		stopNATS(srv)
		return nil, errors.New("NATS server not ready within 10s")
	}
	return srv, nil
}

// stopNATS shuts the server down and waits until it has.
func stopNATS(srv *natsserver.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}
