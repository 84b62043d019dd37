// Package grpctls makes the gRPC listener's TLS credentials from PEM
// files that may be replaced while the service runs, as cert-manager does
// when it renews a certificate: each new connection gets the files'
// current contents, read again every refresh interval.
package grpctls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"

	"github.com/agynio/users/internal/config"
)

// DefaultRefresh is how often the files are read again. cert-manager
// renews a certificate long before it expires, so a minute is plenty.
const DefaultRefresh = time.Minute

// Credentials are server TLS credentials that follow their files.
type Credentials struct {
	credentials.TransportCredentials
	provider certprovider.Provider
}

// Close stops watching the files.
func (c *Credentials) Close() { c.provider.Close() }

// New returns server credentials for t: TLS with t's certificate and key
// and, if t names a client CA, mutual TLS that refuses at the handshake a
// client without a certificate signed by that CA. The files are checked
// now, so that a bad one stops the service at start-up with an error
// naming its variable, rather than failing every handshake.
func New(t config.TLS, refresh time.Duration) (*Credentials, error) {
	if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
		return nil, &config.Error{Variable: "GRPC_TLS_CERT_FILE", Reason: "with GRPC_TLS_KEY_FILE is not a usable key pair: " + err.Error()}
	}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, &config.Error{Variable: "GRPC_TLS_CLIENT_CA_FILE", Reason: err.Error()}
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, &config.Error{Variable: "GRPC_TLS_CLIENT_CA_FILE", Reason: "holds no PEM certificate"}
		}
	}
	provider, err := pemfile.NewProvider(pemfile.Options{
		CertFile:        t.CertFile,
		KeyFile:         t.KeyFile,
		RootFile:        t.ClientCAFile,
		RefreshDuration: refresh,
	})
	if err != nil { // e.g. the certificate and key in different directories
		return nil, &config.Error{Variable: "GRPC_TLS_CERT_FILE", Reason: err.Error()}
	}
	mutual := t.ClientCAFile != ""
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			// KeyMaterial waits until the files have been read once; gRPC
			// may hand the handshake no deadline, so bound the wait here.
			ctx, cancel := context.WithTimeout(hello.Context(), 10*time.Second)
			defer cancel()
			km, err := provider.KeyMaterial(ctx)
			if err != nil {
				return nil, fmt.Errorf("tls key material: %w", err)
			}
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: km.Certs,
				NextProtos:   []string{"h2"}, // gRPC requires ALPN h2
			}
			if mutual {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
				cfg.ClientCAs = km.Roots
			}
			return cfg, nil
		},
	}
	return &Credentials{TransportCredentials: credentials.NewTLS(base), provider: provider}, nil
}
