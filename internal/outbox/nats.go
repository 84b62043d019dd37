package outbox

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConnectNATS connects to url (one or more NATS servers, comma-separated),
// with credsFile if not empty, and returns the JetStream context the relay
// publishes through and a function that closes the connection. It keeps
// trying in the background while NATS cannot be reached: the service
// serves, and writes events to the outbox, whether NATS is there or not.
// A publish while disconnected fails at once (there is no reconnect
// buffer), for the relay to try again later, rather than wait in a buffer
// that a restart would lose. Neither the URL, which may hold a password,
// nor the credentials are logged.
func ConnectNATS(url, credsFile string, log *slog.Logger) (jetstream.JetStream, func(), error) {
	unreachable := &changeLog{log: log, msg: "NATS not reachable; trying again"}
	opts := []nats.Option{
		nats.Name("users"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			unreachable.reset()
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			unreachable.reset()
			log.Info("NATS connected", "server", nc.ConnectedUrlRedacted())
		}),
		// Each failed attempt, every 2 s: logged when its reason changes,
		// so that a refused password or a server away shows once.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { unreachable.note(err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error", "error", err)
		}),
	}
	if credsFile != "" {
		opts = append(opts, nats.UserCredentials(credsFile))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(DefaultAckTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("NATS: %w", err)
	}
	return js, nc.Close, nil
}

// changeLog logs an error under msg when it differs from the last one
// logged, until reset.
type changeLog struct {
	log  *slog.Logger
	msg  string
	mu   sync.Mutex
	last string
}

func (c *changeLog) note(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil || err.Error() == c.last {
		return
	}
	c.last = err.Error()
	c.log.Warn(c.msg, "error", err)
}

func (c *changeLog) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = ""
}
