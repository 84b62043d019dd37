// Command goclient is an example of a Go client of the service, to copy
// from: it dials with mutual TLS and the client behaviour the platform's
// clients are expected to have (see serviceConfig), logs a user in with
// ResolveOrCreateUser, reads the user back with GetUser, and prints both
// answers.
//
//	go run ./examples/goclient -addr localhost:50052 \
//	  -ca certs/ca.crt -cert certs/client.crt -key certs/client.key -subject 'auth0|dave'
//
// CI builds it, lints it and runs it against a served binary, so that it
// stays a client that works.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/health" // client-side health checking, which serviceConfig turns on
	"google.golang.org/protobuf/encoding/protojson"

	// Outside this repository, import the platform's published bindings,
	// "github.com/agynio/api/gen/agynio/api/users/v1": the same package
	// usersv1, generated from the same proto, so this is the only line to
	// change. (internal/gen cannot be imported from another module.)
	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// serviceConfig is the client's behaviour towards the service:
//
//   - round_robin over every address the target resolves to (every
//     replica for the dns:/// name of a headless Kubernetes Service),
//     sending only to replicas whose health says UsersService is SERVING:
//     not one that is draining, nor one whose database is out of reach.
//     Through the one virtual IP of a plain Service, drop
//     healthCheckConfig: the connection is pinned to one replica, which
//     goes on serving while it drains, until it closes the connection and
//     the client reconnects to another; health checking would hold the
//     calls back meanwhile;
//   - waitForReady: while no replica is ready (all of them restarting at
//     once, or the first connection still being made), a call waits for
//     one, up to its deadline, rather than failing at once;
//   - the calls that the API says to retry (UNAVAILABLE: the database is
//     unreachable or the replica is stopping; ABORTED: the statement lost
//     to a concurrent one, and nothing was written) are retried with
//     exponential backoff, up to 5 attempts in all and within the call's
//     deadline. Every other code is returned as it is.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": "agynio.api.users.v1.UsersService"},
  "methodConfig": [{
    "name": [{"service": "agynio.api.users.v1.UsersService"}],
    "waitForReady": true,
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE", "ABORTED"]
    }
  }]
}`

// options are the command's flags.
type options struct {
	addr                      string
	caFile, certFile, keyFile string
	subject, name             string
	timeout                   time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "localhost:50051", "the service's address: host:port, or a gRPC target such as dns:///users.platform:50051")
	flag.StringVar(&o.caFile, "ca", "", "PEM file of the CA that issued the server's certificate (required)")
	flag.StringVar(&o.certFile, "cert", "", "PEM file of the client certificate (required)")
	flag.StringVar(&o.keyFile, "key", "", "PEM file of the client certificate's key (required)")
	flag.StringVar(&o.subject, "subject", "auth0|alice", "OIDC subject to log in")
	flag.StringVar(&o.name, "name", "", "name claim, kept at the subject's first login only")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Second, "deadline of each call, its retries and its wait for a ready replica included")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	creds, err := mutualTLS(o.caFile, o.certFile, o.keyFile)
	if err != nil {
		return err
	}
	// NewClient connects lazily, on the first call; one connection is
	// meant to live as long as the process and be shared by every caller.
	cc, err := grpc.NewClient(o.addr, dialOptions(creds)...)
	if err != nil {
		return err
	}
	defer cc.Close()
	users := usersv1.NewUsersServiceClient(cc)

	// A deadline per call, not one for the whole program: each call,
	// its retries and its wait for a ready replica, gets the same time.
	callCtx, cancel := context.WithTimeout(ctx, o.timeout)
	login, err := users.ResolveOrCreateUser(callCtx, &usersv1.ResolveOrCreateUserRequest{OidcSubject: o.subject, Name: o.name})
	cancel()
	if err != nil {
		return fmt.Errorf("ResolveOrCreateUser: %w", err)
	}
	id := login.GetUser().GetMeta().GetId()
	fmt.Fprintf(out, "ResolveOrCreateUser: identity_id %s, created %t\n", id, login.GetCreated())

	callCtx, cancel = context.WithTimeout(ctx, o.timeout)
	got, err := users.GetUser(callCtx, &usersv1.GetUserRequest{IdentityId: id})
	cancel()
	if err != nil {
		return fmt.Errorf("GetUser: %w", err)
	}
	user, err := protojson.MarshalOptions{Multiline: true}.Marshal(got.GetUser())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "GetUser:\n%s\n", user)
	return nil
}

// dialOptions are how a client of the service dials it, with creds (mutual
// TLS in production).
func dialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(serviceConfig),
	}
}

// mutualTLS returns credentials that trust only the CA in caFile and
// present the client certificate in certFile and keyFile.
func mutualTLS(caFile, certFile, keyFile string) (credentials.TransportCredentials, error) {
	for _, f := range []struct{ flag, file string }{{"-ca", caFile}, {"-cert", certFile}, {"-key", keyFile}} {
		if f.file == "" {
			return nil, fmt.Errorf("%s is required: the service is called over mutual TLS", f.flag)
		}
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(&tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}), nil
}
