package main

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/testdb"
)

// rolloutServiceConfig is how a well-configured client of the platform
// calls the service: spread over every replica, only to those whose health
// Watch says SERVING, and a call refused by a replica on its way out
// (UNAVAILABLE) tried again.
const rolloutServiceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": "agynio.api.users.v1.UsersService"},
  "methodConfig": [{
    "name": [{"service": "agynio.api.users.v1.UsersService"}],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.05s",
      "maxBackoff": "0.5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// retryServiceConfig is a client's retry policy alone, for a client that
// reaches the service through an address that balances connections.
const retryServiceConfig = `{
  "methodConfig": [{
    "name": [{"service": "agynio.api.users.v1.UsersService"}],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.05s",
      "maxBackoff": "0.5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// A replica restarted under load, as a rollout does, costs its clients no
// call. Two replicas on one database take a steady load from two kinds of
// client, each with retries on UNAVAILABLE: one spreads its calls over
// both replicas itself, following their health (round_robin with health
// checks); the others reach them as through a Kubernetes Service, over an
// address whose connections a balancer spreads over the replicas it
// lists, and that list is updated only some time after a replica is told
// to stop. One replica gets SIGTERM, with DRAIN_DELAY longer than that
// lag, exits, and is started again on its address; every call succeeds.
// (Without the delay, a client whose connection to the stopping replica
// is closed reconnects through the balancer, which still lists it, and is
// refused.)
func TestRestartingAReplicaUnderLoadFailsNoCall(t *testing.T) {
	t.Parallel()
	const endpointLag = 300 * time.Millisecond // before the balancer forgets a stopping replica
	// At debug, so that the calls that succeed are in the log too.
	env := map[string]string{"DATABASE_URL": testdb.URL(t), "DRAIN_DELAY": "2s", "SHUTDOWN_TIMEOUT": "10s", "LOG_LEVEL": "debug"}
	a, addrA := startServe(t, env)
	_, addrB := startServe(t, env)

	r := manual.NewBuilderWithScheme("rollout")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: addrA}, {Addr: addrB}}})
	cc, err := grpc.NewClient("rollout:///users",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(rolloutServiceConfig))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	users := usersv1.NewUsersServiceClient(cc)
	user := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "rollout"})

	service := startBalancer(t, addrA, addrB)
	loads := []*load{startLoad(t, users, user.GetMeta().GetId(), 2)}
	for range 4 { // a connection each, spread over both replicas
		cc, err := grpc.NewClient("passthrough:///"+service.addr(),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultServiceConfig(retryServiceConfig))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		loads = append(loads, startLoad(t, usersv1.NewUsersServiceClient(cc), user.GetMeta().GetId(), 1))
	}
	servedBy := func(p *proc) int { return servedCodes(t, p.stdout.String())["OK"] }
	within(t, 10*time.Second, "replica A served no call under load", func() bool { return servedBy(a) > 0 })

	a.terminate(t)
	time.AfterFunc(endpointLag, func() { service.set(addrB) })
	if code := a.wait(t, waitTimeout); code != 0 {
		t.Fatalf("replica A: exit code %d, want 0", code)
	}
	// Started again where the client's resolver still points, and listed
	// again once it serves.
	envA := map[string]string{"GRPC_ADDRESS": addrA}
	for k, v := range env {
		envA[k] = v
	}
	again, _ := startServe(t, envA)
	service.set(addrA, addrB)
	within(t, 20*time.Second, "the restarted replica A served no call", func() bool { return servedBy(again) > 0 })

	failed, total := map[codes.Code]int{}, 0
	for _, l := range loads {
		l.finish()
		for _, c := range l.since(time.Time{}) {
			total++
			if c.code != codes.OK {
				failed[c.code]++
			}
		}
	}
	if len(failed) > 0 {
		t.Errorf("of %d calls across the restart, failed by code: %v; want none", total, failed)
	}
}

// balancer spreads the TCP connections made to its address over the
// backends it lists, in turn, as a Kubernetes Service's virtual IP does;
// a connection to a backend that refuses it is closed.
type balancer struct {
	l net.Listener

	mu       sync.Mutex
	backends []string
	next     int
	conns    []net.Conn
}

func startBalancer(t *testing.T, backends ...string) *balancer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{l: l, backends: backends}
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *balancer) addr() string { return b.l.Addr().String() }

// set replaces the backends that new connections go to.
func (b *balancer) set(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = backends
}

func (b *balancer) serve() {
	for {
		c, err := b.l.Accept()
		if err != nil {
			return
		}
		go b.relay(c)
	}
}

func (b *balancer) relay(c net.Conn) {
	b.mu.Lock()
	backend := b.backends[b.next%len(b.backends)]
	b.next++
	b.mu.Unlock()
	d, err := net.DialTimeout("tcp", backend, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	b.mu.Lock()
	b.conns = append(b.conns, c, d)
	b.mu.Unlock()
	go func() {
		io.Copy(d, c) //nolint:errcheck // ends with either side
		d.Close()
	}()
	io.Copy(c, d) //nolint:errcheck // ends with either side
	c.Close()
}

func (b *balancer) close() {
	b.l.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}
