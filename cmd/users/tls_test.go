package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/testing/certs"
	"github.com/agynio/users/internal/testing/testdb"
)

// TestServeMutualTLS runs "users serve" with all three GRPC_TLS_* files:
// a client with a certificate from the client CA calls the service, and
// every other client is turned away before any RPC.
func TestServeMutualTLS(t *testing.T) {
	t.Parallel()
	ca, otherCA := certs.NewCA(t, "ca"), certs.NewCA(t, "other ca")
	env := tlsFiles(t, ca.Server(t, "users"), ca)
	env["DATABASE_URL"] = testdb.URL(t)
	p, addr := startServe(t, env)
	wantTLSLogLine(t, p, true)

	t.Run("a client with a certificate from the CA calls UsersService", func(t *testing.T) {
		cc := dialTLS(t, addr, certs.ClientConfig(t, ca.Pool(), ca.Client(t, "login")))
		users := usersv1.NewUsersServiceClient(cc)
		created := createUser(t, users, &usersv1.ResolveOrCreateUserRequest{OidcSubject: "mtls|alice"})
		got, err := users.GetUser(rpcContext(t), &usersv1.GetUserRequest{IdentityId: created.GetMeta().GetId()})
		if err != nil {
			t.Fatalf("GetUser over mutual TLS: %v", err)
		}
		if got.GetUser().GetOidcSubject() != "mtls|alice" {
			t.Errorf("GetUser returned %v, want the user just created", got.GetUser())
		}
	})

	for _, tc := range []struct {
		name      string
		client    *tls.Config // nil for plaintext
		wantAlert string      // the alert the server ends the TLS handshake with
	}{
		{
			name:      "a client without a certificate is refused at the handshake",
			client:    certs.ClientConfig(t, ca.Pool(), nil),
			wantAlert: "certificate required",
		},
		{
			name:      "a client with a certificate from another CA is refused at the handshake",
			client:    certs.ClientConfig(t, ca.Pool(), otherCA.Client(t, "stranger")),
			wantAlert: "unknown certificate authority",
		},
		{
			name: "a plaintext client is refused",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			creds := insecure.NewCredentials()
			if tc.client != nil {
				creds = credentials.NewTLS(tc.client)
			}
			wantConnectionRefused(t, addr, creds)
			if tc.client != nil {
				if err := tlsRefusal(t, addr, tc.client); !strings.Contains(errString(err), "remote error: tls: "+tc.wantAlert) {
					t.Errorf("TLS handshake and first read: %v; want the server's alert %q", err, tc.wantAlert)
				}
			}
		})
	}

	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("after SIGTERM: exit code %d, want 0", code)
	}
}

// TestServeTLSWithoutClientCA runs "users serve" with a certificate and
// key only: TLS that asks clients for no certificate.
func TestServeTLSWithoutClientCA(t *testing.T) {
	t.Parallel()
	ca := certs.NewCA(t, "ca")
	server := ca.Server(t, "users")
	env := tlsFiles(t, server, nil)
	env["DATABASE_URL"] = testdb.URL(t)
	p, addr := startServe(t, env)
	wantTLSLogLine(t, p, false)

	t.Run("a client without a certificate calls UsersService", func(t *testing.T) {
		var served tls.ConnectionState
		cfg := certs.ClientConfig(t, ca.Pool(), nil)
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { served = cs; return nil }
		cc := dialTLS(t, addr, cfg)
		createUser(t, usersv1.NewUsersServiceClient(cc), &usersv1.ResolveOrCreateUserRequest{OidcSubject: "tls|bob"})
		if len(served.PeerCertificates) == 0 || !served.PeerCertificates[0].Equal(server.Leaf) {
			t.Errorf("the server did not present the certificate in GRPC_TLS_CERT_FILE")
		}
	})
	t.Run("a plaintext client is refused", func(t *testing.T) {
		wantConnectionRefused(t, addr, insecure.NewCredentials())
	})

	p.terminate(t)
	if code := p.wait(t, waitTimeout); code != 0 {
		t.Errorf("after SIGTERM: exit code %d, want 0", code)
	}
}

// TestServeTLSConfigurationErrors checks that unusable TLS files stop
// serve at start-up, as any configuration error does (exit code 2, one
// line naming the variable), rather than failing each handshake later.
func TestServeTLSConfigurationErrors(t *testing.T) {
	t.Parallel()
	ca := certs.NewCA(t, "ca")
	server := ca.Server(t, "users")
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		certs.WriteFile(t, path, data)
		return path
	}
	cert, key := file("tls.crt", server.CertPEM), file("tls.key", server.KeyPEM)
	garbage := file("garbage.pem", []byte("not PEM at all\n"))
	otherKey := file("other.key", ca.Server(t, "other").KeyPEM)

	for _, tc := range []struct {
		name     string
		env      map[string]string
		variable string
	}{
		{
			name:     "a certificate file that is not PEM",
			env:      map[string]string{"GRPC_TLS_CERT_FILE": garbage, "GRPC_TLS_KEY_FILE": key},
			variable: "GRPC_TLS_CERT_FILE",
		},
		{
			name:     "a certificate file that does not exist",
			env:      map[string]string{"GRPC_TLS_CERT_FILE": filepath.Join(dir, "missing.crt"), "GRPC_TLS_KEY_FILE": key},
			variable: "GRPC_TLS_CERT_FILE",
		},
		{
			name:     "a key that is not the certificate's",
			env:      map[string]string{"GRPC_TLS_CERT_FILE": cert, "GRPC_TLS_KEY_FILE": otherKey},
			variable: "GRPC_TLS_CERT_FILE",
		},
		{
			name:     "a certificate without a key",
			env:      map[string]string{"GRPC_TLS_CERT_FILE": cert},
			variable: "GRPC_TLS_CERT_FILE",
		},
		{
			name:     "a client CA file with no certificate in it",
			env:      map[string]string{"GRPC_TLS_CERT_FILE": cert, "GRPC_TLS_KEY_FILE": key, "GRPC_TLS_CLIENT_CA_FILE": garbage},
			variable: "GRPC_TLS_CLIENT_CA_FILE",
		},
		{
			name:     "a client CA file that does not exist",
			env:      map[string]string{"GRPC_TLS_CERT_FILE": cert, "GRPC_TLS_KEY_FILE": key, "GRPC_TLS_CLIENT_CA_FILE": filepath.Join(dir, "missing.crt")},
			variable: "GRPC_TLS_CLIENT_CA_FILE",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Syntactically valid; nothing listens there, and nothing
			// should try: the files are checked first.
			env := map[string]string{"DATABASE_URL": "postgres://u:pw@127.0.0.1:1/users", "GRPC_ADDRESS": "127.0.0.1:0", "ADMIN_ADDRESS": "127.0.0.1:0"}
			for k, v := range tc.env {
				env[k] = v
			}
			res := runUsers(t, env, "serve")
			if res.code != 2 {
				t.Errorf("exit code %d, want 2\nstderr:\n%s", res.code, res.stderr)
			}
			msg := strings.TrimSuffix(res.stderr, "\n")
			if msg == "" || strings.Contains(msg, "\n") {
				t.Errorf("stderr is not one line:\n%s", res.stderr)
			}
			if !strings.Contains(msg, tc.variable) {
				t.Errorf("stderr %q does not name %s", msg, tc.variable)
			}
			if strings.Contains(res.stdout, `"msg":"serving"`) {
				t.Errorf("serve started serving:\n%s", res.stdout)
			}
		})
	}
}

// tlsFiles writes the server's certificate and key, and the client CA
// when it is not nil, into one directory, and returns the environment
// that names them.
func tlsFiles(t *testing.T, server *certs.Cert, clientCA *certs.CA) map[string]string {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{
		"GRPC_TLS_CERT_FILE": filepath.Join(dir, "tls.crt"),
		"GRPC_TLS_KEY_FILE":  filepath.Join(dir, "tls.key"),
	}
	certs.WriteFile(t, env["GRPC_TLS_CERT_FILE"], server.CertPEM)
	certs.WriteFile(t, env["GRPC_TLS_KEY_FILE"], server.KeyPEM)
	if clientCA != nil {
		env["GRPC_TLS_CLIENT_CA_FILE"] = filepath.Join(dir, "ca.crt")
		certs.WriteFile(t, env["GRPC_TLS_CLIENT_CA_FILE"], clientCA.PEM)
	}
	return env
}

// dialTLS returns a client connection to addr over TLS, closed when t ends.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatalf("grpc.NewClient(%q): %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// wantConnectionRefused checks that a health Check over a new connection
// with creds fails for want of a connection: UNAVAILABLE, not an answer
// from the service (and not a deadline, which a hung handshake would be).
func wantConnectionRefused(t *testing.T, addr string, creds credentials.TransportCredentials) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc.NewClient(%q): %v", addr, err)
	}
	defer cc.Close()
	_, err = healthpb.NewHealthClient(cc).Check(rpcContext(t), &healthpb.HealthCheckRequest{})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("health Check: code %s (%v), want Unavailable", got, err)
	}
}

// tlsRefusal makes a bare TLS handshake with addr and reads, returning the
// error. With TLS 1.3 the server judges the client's certificate after the
// client's half of the handshake is done, so its refusal is an alert that
// the first read returns; the gRPC client, which writes at once, may find
// the connection reset instead, so that the alert shows only here.
func tlsRefusal(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	conn, err := (&net.Dialer{Timeout: waitTimeout}).DialContext(rpcContext(t), "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(conn, cfg)
	if err := tc.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if err := tc.Handshake(); err != nil {
		return err
	}
	_, err = bufio.NewReader(tc).ReadByte()
	return err
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// wantTLSLogLine checks that serve said at start-up that it serves TLS,
// mutual or not, and did not warn of plaintext.
func wantTLSLogLine(t *testing.T, p *proc, mutual bool) {
	t.Helper()
	var found bool
	for _, line := range strings.Split(p.stdout.String(), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			Mutual *bool  `json:"mutual"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "gRPC TLS on":
			found = true
			if rec.Mutual == nil || *rec.Mutual != mutual {
				t.Errorf("log line %s: want \"mutual\": %t", line, mutual)
			}
		case plaintextWarning:
			t.Errorf("serve with TLS warned of plaintext: %s", line)
		}
	}
	if !found {
		t.Errorf("serve logged no %q line:\n%s", "gRPC TLS on", p.stdout)
	}
}
