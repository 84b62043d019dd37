package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// requireTLS configures the cluster in data to take TCP connections over
// TLS only, with a fresh self-signed certificate for 127.0.0.1.
func requireTLS(data string, cred *syscall.Credential) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgtest"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}

	files := []struct {
		name    string
		content []byte
		append  bool
	}{
		{"server.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), false},
		// PostgreSQL refuses a key file that others can read.
		{"server.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), false},
		// hostssl only: a client that does not use TLS is refused.
		{"pg_hba.conf", []byte("local all all trust\nhostssl all all 127.0.0.1/32 trust\n"), false},
		{"postgresql.conf", []byte("\nssl = on\n"), true},
	}
	for _, f := range files {
		path := filepath.Join(data, f.name)
		flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		if f.append {
			flags = os.O_WRONLY | os.O_APPEND
		}
		fh, err := os.OpenFile(path, flags, 0o600)
		if err != nil {
			return err
		}
		_, err = fh.Write(f.content)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err == nil && cred != nil {
			err = os.Chown(path, int(cred.Uid), int(cred.Gid))
		}
		if err != nil {
			return err
		}
	}
	return nil
}
