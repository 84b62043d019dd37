package pgtest

import (
	"os"
	"path/filepath"
	"syscall"

	"github.com/agynio/users/internal/testing/certs"
)

// requireTLS configures the cluster in data to take TCP connections over
// TLS only, with a fresh certificate for localhost and the loopback
// addresses, and returns the PEM of the CA that issued it: what a client
// that verifies the server (sslmode=verify-full) must be given.
func requireTLS(data string, cred *syscall.Credential) (caPEM []byte, err error) {
	ca, err := certs.MakeCA("pgtest CA")
	if err != nil {
		return nil, err
	}
	cert, err := ca.MakeServer("pgtest")
	if err != nil {
		return nil, err
	}

	files := []struct {
		name    string
		content []byte
		append  bool
	}{
		{"server.crt", cert.CertPEM, false},
		// PostgreSQL refuses a key file that others can read.
		{"server.key", cert.KeyPEM, false},
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
			return nil, err
		}
		_, err = fh.Write(f.content)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err == nil && cred != nil {
			err = os.Chown(path, int(cred.Uid), int(cred.Gid))
		}
		if err != nil {
			return nil, err
		}
	}
	return ca.PEM, nil
}
