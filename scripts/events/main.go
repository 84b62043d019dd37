// Command events prints the users service's change events as they are in
// its JetStream stream, one JSON line each: the subject and the payload
// (agynio.users.events.v1) as protojson. It reads NATS_URL (default
// nats://127.0.0.1:4222) and NATS_STREAM (default USERS), as the service
// does, and follows the stream from its first event until interrupted,
// or, with -idle, until nothing new has come for that long.
//
//	go run ./scripts/events -idle 5s
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/agynio/users/internal/gen/agynio/users/events/v1"
)

func main() {
	idle := flag.Duration("idle", 0, "exit once no event has come for this long (0: follow until interrupted)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, idle time.Duration) error {
	nc, err := nats.Connect(cmp.Or(os.Getenv("NATS_URL"), nats.DefaultURL))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream := cmp.Or(os.Getenv("NATS_STREAM"), "USERS")
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("stream %s: %w (the service creates it when it first relays)", stream, err)
	}
	out := json.NewEncoder(os.Stdout)
	wait := idle
	if wait == 0 {
		wait = time.Second
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(wait))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			line, err := decode(m)
			if err != nil {
				return err
			}
			if err := out.Encode(line); err != nil {
				return err
			}
		}
		if n == 0 && idle > 0 {
			return nil
		}
	}
	return nil
}

// payloads are the message each subject carries.
var payloads = map[string]func() proto.Message{
	"agyn.users.user.created":      func() proto.Message { return &eventsv1.UserCreated{} },
	"agyn.users.user.updated":      func() proto.Message { return &eventsv1.UserUpdated{} },
	"agyn.users.user.deleted":      func() proto.Message { return &eventsv1.UserDeleted{} },
	"agyn.users.api_token.created": func() proto.Message { return &eventsv1.APITokenCreated{} },
	"agyn.users.api_token.revoked": func() proto.Message { return &eventsv1.APITokenRevoked{} },
}

type line struct {
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event"`
}

func decode(m jetstream.Msg) (line, error) {
	newPayload, ok := payloads[m.Subject()]
	if !ok {
		return line{}, fmt.Errorf("unknown subject %s", m.Subject())
	}
	p := newPayload()
	if err := proto.Unmarshal(m.Data(), p); err != nil {
		return line{}, fmt.Errorf("%s: %w", m.Subject(), err)
	}
	js, err := protojson.Marshal(p)
	if err != nil {
		return line{}, err
	}
	return line{Subject: m.Subject(), Event: js}, nil
}
