package grpctls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/agynio/users/internal/config"
	"github.com/agynio/users/internal/grpctls"
	"github.com/agynio/users/internal/testing/certs"
)

const (
	// refresh is how often the credentials read their files again here:
	// short, so that a rotation shows well within rotationTimeout.
	refresh = 50 * time.Millisecond
	// rotationTimeout bounds the wait for a rotated file to be served:
	// many refreshes, for a loaded machine.
	rotationTimeout = 10 * time.Second
	// callTimeout bounds every RPC, so that a handshake that never ends
	// fails the test instead of hanging it.
	callTimeout = 10 * time.Second
)

// Why the server's handshake fails, in crypto/tls's words.
const (
	noClientCertificate = "tls: client didn't provide a certificate"
	unknownAuthority    = "certificate signed by unknown authority"
	notTLS              = "first record does not look like a TLS handshake"
)

// File names as cert-manager writes them into a Kubernetes Secret.
const (
	certName = "tls.crt"
	keyName  = "tls.key"
	caName   = "ca.crt"
)

// TestTLSServesClientsThatTrustTheCA serves TLS without a client CA: the
// server presents the configured certificate, and speaks nothing but TLS.
func TestTLSServesClientsThatTrustTheCA(t *testing.T) {
	t.Parallel()
	ca := certs.NewCA(t, "ca")
	server := ca.Server(t, "server")
	cfg := writeFiles(t, t.TempDir(), server, nil)
	addr, srv := serve(t, newCredentials(t, cfg))

	t.Run("a client that trusts the CA gets through and sees the certificate", func(t *testing.T) {
		got, err := check(t, addr, client{roots: ca.Pool()}.creds(t))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if !got.Equal(server.Leaf) {
			t.Errorf("server presented %q (serial %s), want %q (serial %s)", got.Subject, got.SerialNumber, server.Leaf.Subject, server.Leaf.SerialNumber)
		}
	})
	t.Run("a client that does not trust the CA refuses the server", func(t *testing.T) {
		before := srv.mark()
		_, err := check(t, addr, client{roots: certs.NewCA(t, "other").Pool()}.creds(t))
		wantUnavailable(t, err)
		// The client's own check, so it is in the client's handshake error.
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "authentication handshake failed") || !strings.Contains(msg, unknownAuthority) {
			t.Errorf("error %q is not the client's handshake refusing the server's certificate", msg)
		}
		srv.wantHandshakeFailedSince(t, before, "remote error: tls: bad certificate")
	})
	t.Run("a plaintext client is refused", func(t *testing.T) {
		before := srv.mark()
		_, err := check(t, addr, insecure.NewCredentials())
		wantUnavailable(t, err)
		srv.wantHandshakeFailedSince(t, before, notTLS)
	})
}

// TestMutualTLSRefusesClientsAtTheHandshake serves mutual TLS: only a
// client with a certificate from the client CA gets a call through; the
// server's handshake fails for every other, so no RPC of theirs runs.
func TestMutualTLSRefusesClientsAtTheHandshake(t *testing.T) {
	t.Parallel()
	ca := certs.NewCA(t, "ca")
	otherCA := certs.NewCA(t, "other ca")
	cfg := writeFiles(t, t.TempDir(), ca.Server(t, "server"), ca)
	addr, srv := serve(t, newCredentials(t, cfg))
	good, stranger := ca.Client(t, "good client"), otherCA.Client(t, "stranger")

	// Sequential: each case looks at what the server saw since it began.
	// The server accepts TLS 1.2 too, where it checks the client's
	// certificate at another point of the handshake, so both are tried.
	for _, tc := range []struct {
		name       string
		client     client
		plaintext  bool
		wantClient string // the verified client the server saw; "" when refused
		wantErr    string // the server's handshake error when refused
	}{
		{
			name:       "a client with a certificate from the CA gets through",
			client:     client{roots: ca.Pool(), cert: good},
			wantClient: "good client",
		},
		{
			name:       "a TLS 1.2 client with a certificate from the CA gets through",
			client:     client{roots: ca.Pool(), cert: good, maxVersion: tls.VersionTLS12},
			wantClient: "good client",
		},
		{
			name:    "a client without a certificate is refused",
			client:  client{roots: ca.Pool()},
			wantErr: noClientCertificate,
		},
		{
			name:    "a TLS 1.2 client without a certificate is refused",
			client:  client{roots: ca.Pool(), maxVersion: tls.VersionTLS12},
			wantErr: noClientCertificate,
		},
		{
			name:    "a client with a certificate from another CA is refused",
			client:  client{roots: ca.Pool(), cert: stranger},
			wantErr: unknownAuthority,
		},
		{
			name:    "a TLS 1.2 client with a certificate from another CA is refused",
			client:  client{roots: ca.Pool(), cert: stranger, maxVersion: tls.VersionTLS12},
			wantErr: unknownAuthority,
		},
		{
			name:      "a plaintext client is refused",
			plaintext: true,
			wantErr:   notTLS,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			creds := tc.client.creds(t)
			if tc.plaintext {
				creds = insecure.NewCredentials()
			}
			before := srv.mark()
			_, err := check(t, addr, creds)
			if tc.wantClient == "" {
				wantUnavailable(t, err)
				srv.wantHandshakeFailedSince(t, before, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got := srv.lastClient(); got != tc.wantClient {
				t.Errorf("server saw verified client %q, want %q", got, tc.wantClient)
			}
		})
	}
}

// TestRotatedTLSFilesAreServedWithoutRestart replaces every file under a
// running server, the way each kind of deployment does, and waits for a
// new connection to see the new server certificate and the new client CA.
// The rotation moves to another CA altogether, so that it shows in both
// directions: clients of the new CA get in, clients of the old one no
// longer do.
func TestRotatedTLSFilesAreServedWithoutRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// layout writes the first files into dir and returns the paths
		// the service is configured with; rotate replaces them.
		layout func(t *testing.T, dir string, files map[string][]byte) config.TLS
		rotate func(t *testing.T, dir string, files map[string][]byte)
	}{
		{
			name:   "each file renamed into place",
			layout: writeFlat,
			rotate: renameIntoPlace,
		},
		{
			name:   "a ..data symlink swapped, as the kubelet updates a mounted Secret",
			layout: writeSecretVolume,
			rotate: swapSecretVolume,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			oldCA, newCA := certs.NewCA(t, "old ca"), certs.NewCA(t, "new ca")
			oldServer, newServer := oldCA.Server(t, "old server"), newCA.Server(t, "new server")
			trustsBoth := oldCA.Pool()
			trustsBoth.AddCert(newCA.Cert)
			oldClient := client{roots: trustsBoth, cert: oldCA.Client(t, "old client")}.creds(t)
			newClient := client{roots: trustsBoth, cert: newCA.Client(t, "new client")}.creds(t)

			dir := t.TempDir()
			cfg := tc.layout(t, dir, secretFiles(oldServer, oldCA))
			addr, srv := serve(t, newCredentials(t, cfg))

			got, err := check(t, addr, oldClient)
			if err != nil {
				t.Fatalf("before rotation: Check: %v", err)
			}
			if !got.Equal(oldServer.Leaf) {
				t.Fatalf("before rotation: server presented %q, want %q", got.Subject, oldServer.Leaf.Subject)
			}
			before := srv.mark()
			_, err = check(t, addr, newClient)
			wantUnavailable(t, err)
			srv.wantHandshakeFailedSince(t, before, unknownAuthority)

			tc.rotate(t, dir, secretFiles(newServer, newCA))

			// Each file is read on its own, so for a moment the server may
			// have the new CA and the old certificate: wait for both.
			deadline := time.Now().Add(rotationTimeout)
			for {
				got, err = check(t, addr, newClient)
				if err == nil && got.Equal(newServer.Leaf) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s after rotation, a new connection still gets %s, %v; want %q served to the new CA's client",
						rotationTimeout, subject(got), err, newServer.Leaf.Subject)
				}
				time.Sleep(refresh / 2)
			}
			before = srv.mark()
			_, err = check(t, addr, oldClient)
			wantUnavailable(t, err)
			srv.wantHandshakeFailedSince(t, before, unknownAuthority)
		})
	}
}

// TestNewRefusesBadTLSFilesNamingTheVariable checks that New finds bad
// files at start-up and names the variable to fix, as a config error.
func TestNewRefusesBadTLSFilesNamingTheVariable(t *testing.T) {
	t.Parallel()
	ca := certs.NewCA(t, "ca")
	server := ca.Server(t, "server")
	stranger := ca.Server(t, "stranger")
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		certs.WriteFile(t, path, data)
		return path
	}
	cert, key := file("tls.crt", server.CertPEM), file("tls.key", server.KeyPEM)
	strangerKey := file("stranger.key", stranger.KeyPEM)
	notPEM := file("not.pem", []byte("not a certificate\n"))
	keyOnly := file("key-only.pem", server.KeyPEM)
	if err := os.Mkdir(filepath.Join(dir, "elsewhere"), 0o700); err != nil {
		t.Fatal(err)
	}
	keyElsewhere := file(filepath.Join("elsewhere", "tls.key"), server.KeyPEM)
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name string
		cfg  config.TLS
		want string
	}{
		{"a certificate file that does not exist", config.TLS{CertFile: missing, KeyFile: key}, "GRPC_TLS_CERT_FILE"},
		{"a certificate file that is not PEM", config.TLS{CertFile: notPEM, KeyFile: key}, "GRPC_TLS_CERT_FILE"},
		{"a key file that does not exist", config.TLS{CertFile: cert, KeyFile: missing}, "GRPC_TLS_CERT_FILE"},
		{"a key that is not the certificate's", config.TLS{CertFile: cert, KeyFile: strangerKey}, "GRPC_TLS_CERT_FILE"},
		{"a certificate and key in different directories", config.TLS{CertFile: cert, KeyFile: keyElsewhere}, "GRPC_TLS_CERT_FILE"},
		{"a client CA file that does not exist", config.TLS{CertFile: cert, KeyFile: key, ClientCAFile: missing}, "GRPC_TLS_CLIENT_CA_FILE"},
		{"a client CA file that is not PEM", config.TLS{CertFile: cert, KeyFile: key, ClientCAFile: notPEM}, "GRPC_TLS_CLIENT_CA_FILE"},
		{"a client CA file with PEM but no certificate", config.TLS{CertFile: cert, KeyFile: key, ClientCAFile: keyOnly}, "GRPC_TLS_CLIENT_CA_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			creds, err := grpctls.New(tc.cfg, refresh, discard)
			if creds != nil {
				creds.Close()
				t.Fatalf("New succeeded; want an error naming %s", tc.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("New: %v (%T), want a *config.Error", err, err)
			}
			if ce.Variable != tc.want {
				t.Errorf("New: error names %s (%v), want %s", ce.Variable, err, tc.want)
			}
		})
	}

	// The same files, rightly paired, are fine: the cases above fail for
	// the one fault each has.
	creds, err := grpctls.New(config.TLS{CertFile: cert, KeyFile: key, ClientCAFile: file("ca.crt", ca.PEM)}, refresh, discard)
	if err != nil {
		t.Fatalf("New with good files: %v", err)
	}
	creds.Close()
}

func newCredentials(t *testing.T, cfg config.TLS) *grpctls.Credentials {
	t.Helper()
	creds, err := grpctls.New(cfg, refresh, discard)
	if err != nil {
		t.Fatalf("grpctls.New: %v", err)
	}
	t.Cleanup(creds.Close)
	return creds
}

// secretFiles are the files of a TLS Secret: the server's certificate and
// key, and the CA its clients' certificates must come from.
func secretFiles(server *certs.Cert, clientCA *certs.CA) map[string][]byte {
	return map[string][]byte{certName: server.CertPEM, keyName: server.KeyPEM, caName: clientCA.PEM}
}

// writeFiles writes the server's files into dir (together, as pemfile
// requires) and returns the configuration naming them: mutual TLS when
// clientCA is not nil.
func writeFiles(t *testing.T, dir string, server *certs.Cert, clientCA *certs.CA) config.TLS {
	t.Helper()
	cfg := config.TLS{CertFile: filepath.Join(dir, certName), KeyFile: filepath.Join(dir, keyName)}
	certs.WriteFile(t, cfg.CertFile, server.CertPEM)
	certs.WriteFile(t, cfg.KeyFile, server.KeyPEM)
	if clientCA != nil {
		cfg.ClientCAFile = filepath.Join(dir, caName)
		certs.WriteFile(t, cfg.ClientCAFile, clientCA.PEM)
	}
	return cfg
}

func writeFlat(t *testing.T, dir string, files map[string][]byte) config.TLS {
	t.Helper()
	for name, data := range files {
		certs.WriteFile(t, filepath.Join(dir, name), data)
	}
	return secretConfig(dir)
}

// renameIntoPlace replaces each file atomically, as a careful operator or
// a sidecar would: a reader sees the old file or the new one, never half
// of one (though it may see a new certificate beside an old key).
func renameIntoPlace(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		certs.WriteFile(t, tmp, data)
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSecretVolume lays files out as the kubelet mounts a Secret: each
// name is a symlink into ..data, itself a symlink to a directory holding
// the current version of every file.
func writeSecretVolume(t *testing.T, dir string, files map[string][]byte) config.TLS {
	t.Helper()
	writeSecretVersion(t, dir, "..v1", files)
	symlink(t, "..v1", filepath.Join(dir, "..data"))
	for name := range files {
		symlink(t, filepath.Join("..data", name), filepath.Join(dir, name))
	}
	return secretConfig(dir)
}

// swapSecretVolume updates the volume as the kubelet does: the new version
// is written beside the old one and ..data is switched to it in a single
// rename, so that every file changes at once.
func swapSecretVolume(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	writeSecretVersion(t, dir, "..v2", files)
	symlink(t, "..v2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
}

func writeSecretVersion(t *testing.T, dir, version string, files map[string][]byte) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, version), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		certs.WriteFile(t, filepath.Join(dir, version, name), data)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func secretConfig(dir string) config.TLS {
	return config.TLS{
		CertFile:     filepath.Join(dir, certName),
		KeyFile:      filepath.Join(dir, keyName),
		ClientCAFile: filepath.Join(dir, caName),
	}
}

// recorder remembers what reached the server: the outcome of every TLS
// handshake, and for every RPC the client certificate that handshake
// verified. It lets a test tell a client refused at the handshake (a
// failed handshake, no call) from one refused later or let in.
type recorder struct {
	mu         sync.Mutex
	handshakes []error
	clients    []string // common name of each call's verified client; "" for none
}

// mark is where the recorder stands, for the *Since methods.
type mark struct{ handshakes, calls int }

func (r *recorder) mark() mark {
	r.mu.Lock()
	defer r.mu.Unlock()
	return mark{len(r.handshakes), len(r.clients)}
}

// observed reports each server handshake of creds to r.
type observed struct {
	credentials.TransportCredentials
	r *recorder
}

func (o observed) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := o.TransportCredentials.ServerHandshake(conn)
	o.r.mu.Lock()
	o.r.handshakes = append(o.r.handshakes, err)
	o.r.mu.Unlock()
	return out, info, err
}

func (r *recorder) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	client := ""
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			client = info.State.VerifiedChains[0][0].Subject.CommonName
		}
	}
	r.mu.Lock()
	r.clients = append(r.clients, client)
	r.mu.Unlock()
	return handler(ctx, req)
}

func (r *recorder) lastClient() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.clients) == 0 {
		return "(no call)"
	}
	return r.clients[len(r.clients)-1]
}

func (r *recorder) wantNoCallSince(t *testing.T, m mark) {
	t.Helper()
	if n := r.mark().calls - m.calls; n != 0 {
		t.Errorf("%d call(s) reached the server, want none", n)
	}
}

// wantHandshakeFailedSince checks that the server's first handshake since
// m failed saying want, and that no call got through. The client may see
// its connection fail a moment before the server's handshake returns, so
// it waits for that handshake, for a bounded time.
func (r *recorder) wantHandshakeFailedSince(t *testing.T, m mark, want string) {
	t.Helper()
	deadline := time.Now().Add(callTimeout)
	for r.mark().handshakes == m.handshakes {
		if time.Now().After(deadline) {
			t.Fatalf("no server handshake within %s", callTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	r.mu.Lock()
	err := r.handshakes[m.handshakes]
	r.mu.Unlock()
	if err == nil {
		t.Errorf("the server's handshake succeeded; want it to fail with %q", want)
	} else if !strings.Contains(err.Error(), want) {
		t.Errorf("the server's handshake failed with %q; want %q", err, want)
	}
	r.wantNoCallSince(t, m)
}

// serve runs a gRPC server with creds on a loopback port, with the health
// service as the one service there is to call, until t ends.
func serve(t *testing.T, creds credentials.TransportCredentials) (string, *recorder) {
	t.Helper()
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv := grpc.NewServer(grpc.Creds(observed{creds, rec}), grpc.UnaryInterceptor(rec.intercept))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis) //nolint:errcheck // ends with Stop below
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String(), rec
}

// check makes one health Check over a new connection, so that it takes a
// handshake of its own, and returns the certificate the server presented.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) (*x509.Certificate, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc.NewClient(%q): %v", addr, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		t.Fatalf("the call succeeded without a server certificate (auth info %#v)", p.AuthInfo)
	}
	return info.State.PeerCertificates[0], nil
}

// wantUnavailable checks that err is a failed connection: UNAVAILABLE,
// not, say, UNAUTHENTICATED from a handler, or a deadline from a handshake
// that hung. (With TLS 1.3 the server judges the client's certificate
// after the client's side of the handshake is done, so what the client
// reads then, the server's alert or a reset connection, varies; the
// server's side says why, see wantHandshakeFailedSince.)
func wantUnavailable(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("the call succeeded; want it refused")
	}
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("code %s (%v), want Unavailable", got, err)
	}
}

// client is how a test client speaks TLS.
type client struct {
	roots      *x509.CertPool
	cert       *certs.Cert // nil for none
	maxVersion uint16      // 0 for the newest
}

func (c client) creds(t *testing.T) credentials.TransportCredentials {
	t.Helper()
	cfg := certs.ClientConfig(t, c.roots, c.cert)
	cfg.MaxVersion = c.maxVersion
	return credentials.NewTLS(cfg)
}

func subject(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	return "certificate " + c.Subject.String()
}
