// Command devcerts makes throwaway certificates for trying the service's
// TLS and mutual TLS on one machine:
//
//	go run ./scripts/devcerts -dir certs
//
// writes, into dir, a CA (ca.crt), a server certificate for localhost,
// 127.0.0.1 and ::1 with its key (tls.crt, tls.key: the names a
// cert-manager Secret gives them) and a client certificate with its key
// (client.crt, client.key), all valid for a day. The CA's key is not
// written: nothing more can be issued under it, and running the command
// again replaces all five files. These are for local use only.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/agynio/users/internal/testing/certs"
)

func main() {
	dir := flag.String("dir", "certs", "directory to write the certificates and keys to (created if missing)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: devcerts [-dir DIR]")
		os.Exit(2)
	}
	if err := write(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "devcerts:", err)
		os.Exit(1)
	}
	fmt.Printf("devcerts: wrote %s\n", filepath.Join(*dir, "{ca.crt,tls.crt,tls.key,client.crt,client.key}"))
}

// write issues the CA, the server certificate and the client certificate
// and writes them to dir.
func write(dir string) error {
	ca, err := certs.MakeCA("users dev CA")
	if err != nil {
		return err
	}
	server, err := ca.MakeServer("users")
	if err != nil {
		return err
	}
	client, err := ca.MakeClient("goclient")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Keys readable by their owner only, as a private key must be; the
	// certificates by anyone.
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{"ca.crt", ca.PEM, 0o644},
		{"tls.crt", server.CertPEM, 0o644},
		{"tls.key", server.KeyPEM, 0o600},
		{"client.crt", client.CertPEM, 0o644},
		{"client.key", client.KeyPEM, 0o600},
	}
	var errs []error
	for _, f := range files {
		errs = append(errs, writeFile(filepath.Join(dir, f.name), f.data, f.perm))
	}
	return errors.Join(errs...)
}

// writeFile writes data to path with perm. A file already there is
// removed first: os.WriteFile would keep its permissions, and a new key
// must not land in a file that others may read.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, data, perm)
}
