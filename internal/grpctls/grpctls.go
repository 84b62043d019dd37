// Package grpctls makes the gRPC listener's TLS credentials from PEM
// files that may be replaced while the service runs, as cert-manager does
// when it renews a certificate: each new connection gets the files'
// current contents, read again every refresh interval.
//
// It reads the files itself, with crypto/tls, rather than through gRPC's
// pemfile provider: that one logs both files in full, the private key
// included, when a renewed key does not match its certificate.
package grpctls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/agynio/users/internal/config"
)

// DefaultRefresh is how often the files are read again. cert-manager
// renews a certificate long before it expires, so a minute is plenty.
const DefaultRefresh = time.Minute

// Credentials are server TLS credentials that follow their files.
type Credentials struct {
	credentials.TransportCredentials
	stop     context.CancelFunc
	stopped  chan struct{}
	stopOnce sync.Once
}

// Close stops watching the files.
func (c *Credentials) Close() {
	c.stopOnce.Do(func() {
		c.stop()
		<-c.stopped
	})
}

// New returns server credentials for t: TLS with t's certificate and key
// and, if t names a client CA, mutual TLS that refuses at the handshake a
// client without a certificate signed by that CA. The files are read now,
// so that a bad one stops the service at start-up with an error naming
// its variable, rather than failing every handshake. Later, files that do
// not load (a key that is not the certificate's, a CA file without a
// certificate) are logged to log, without their contents, and the
// previous ones go on being served.
func New(t config.TLS, refresh time.Duration, log *slog.Logger) (*Credentials, error) {
	// One directory, as a Secret mount is, so that a renewal replaces the
	// two together (a kubelet swaps the whole directory at once).
	if filepath.Dir(t.CertFile) != filepath.Dir(t.KeyFile) {
		return nil, config.Errorf("GRPC_TLS_CERT_FILE", "and GRPC_TLS_KEY_FILE must be in one directory")
	}
	f := &files{cfg: t, log: log}
	if err := f.loadPair(); err != nil {
		return nil, config.Errorf("GRPC_TLS_CERT_FILE", "with GRPC_TLS_KEY_FILE is not a usable key pair: %v", err)
	}
	if t.ClientCAFile != "" {
		if err := f.loadClientCA(); err != nil {
			return nil, config.Errorf("GRPC_TLS_CLIENT_CA_FILE", "%v", err)
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	c := &Credentials{stop: stop, stopped: make(chan struct{})}
	go func() {
		defer close(c.stopped)
		f.watch(ctx, refresh)
	}()

	mutual := t.ClientCAFile != ""
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*f.pair.Load()},
				NextProtos:   []string{"h2"}, // gRPC requires ALPN h2
			}
			if mutual {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
				cfg.ClientCAs = f.clientCAs.Load()
			}
			return cfg, nil
		},
	}
	c.TransportCredentials = credentials.NewTLS(base)
	return c, nil
}

// files holds what the TLS files last held that loaded.
type files struct {
	cfg config.TLS
	log *slog.Logger

	pair      atomic.Pointer[tls.Certificate]
	clientCAs atomic.Pointer[x509.CertPool]

	// The contents last tried, loaded or not: a file is tried again, and
	// a failure logged again, only once it has changed.
	certPEM, keyPEM, caPEM []byte
}

func (f *files) watch(ctx context.Context, refresh time.Duration) {
	ticker := time.NewTicker(refresh)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if err := f.loadPair(); err != nil {
			// Never the files' contents: one of them is the private key.
			f.log.Warn("TLS certificate and key not reloaded: serving the previous ones",
				"cert_file", f.cfg.CertFile, "key_file", f.cfg.KeyFile, "error", err)
		}
		if f.cfg.ClientCAFile != "" {
			if err := f.loadClientCA(); err != nil {
				f.log.Warn("TLS client CA not reloaded: trusting the previous one",
					"client_ca_file", f.cfg.ClientCAFile, "error", err)
			}
		}
	}
}

// loadPair reads the certificate and the key, and serves them if they
// changed and make a pair. Its errors never hold the files' contents.
func (f *files) loadPair() error {
	certPEM, err := os.ReadFile(f.cfg.CertFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(f.cfg.KeyFile)
	if err != nil {
		return err
	}
	if bytes.Equal(certPEM, f.certPEM) && bytes.Equal(keyPEM, f.keyPEM) {
		return nil
	}
	f.certPEM, f.keyPEM = certPEM, keyPEM
	// crypto/tls's errors are fixed texts (at most naming PEM block
	// types), never the bytes it was given.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	if f.pair.Swap(&pair) != nil {
		f.log.Info("TLS certificate reloaded", "cert_file", f.cfg.CertFile, "not_after", pair.Leaf.NotAfter)
	}
	return nil
}

// loadClientCA reads the client CA bundle, and trusts it if it changed
// and holds a certificate.
func (f *files) loadClientCA() error {
	caPEM, err := os.ReadFile(f.cfg.ClientCAFile)
	if err != nil {
		return err
	}
	if bytes.Equal(caPEM, f.caPEM) {
		return nil
	}
	f.caPEM = caPEM
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("holds no PEM certificate")
	}
	if f.clientCAs.Swap(pool) != nil {
		f.log.Info("TLS client CA reloaded", "client_ca_file", f.cfg.ClientCAFile)
	}
	return nil
}
