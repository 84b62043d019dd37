package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The files make a working mutual TLS pair: a client with client.crt that
// trusts ca.crt completes a handshake with a server presenting tls.crt that
// requires a client certificate from ca.crt, for each name the README's
// examples dial.
func TestFilesMakeMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := write(dir); err != nil {
		t.Fatal(err)
	}
	file := func(name string) string { return filepath.Join(dir, name) }
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(file("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	server, err := tls.LoadX509KeyPair(file("tls.crt"), file("tls.key"))
	if err != nil {
		t.Fatalf("tls.crt and tls.key: %v", err)
	}
	client, err := tls.LoadX509KeyPair(file("client.crt"), file("client.key"))
	if err != nil {
		t.Fatalf("client.crt and client.key: %v", err)
	}

	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// Over TCP, whose buffers take the server's alert should it
			// refuse the client (a client done with its side of a TLS 1.3
			// handshake reads nothing more), and under a deadline.
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			deadline := time.Now().Add(10 * time.Second)
			done := make(chan error, 1)
			go func() {
				conn, err := lis.Accept()
				if err != nil {
					done <- err
					return
				}
				defer conn.Close()
				conn.SetDeadline(deadline) //nolint:errcheck // a failed deadline shows as a handshake error
				done <- tls.Server(conn, &tls.Config{
					Certificates: []tls.Certificate{server},
					ClientAuth:   tls.RequireAndVerifyClientCert,
					ClientCAs:    roots,
				}).Handshake()
			}()
			conn, err := net.DialTimeout("tcp", lis.Addr().String(), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(deadline) //nolint:errcheck // a failed deadline shows as a handshake error
			cli := tls.Client(conn, &tls.Config{
				Certificates: []tls.Certificate{client},
				RootCAs:      roots,
				ServerName:   name,
			})
			if err := cli.Handshake(); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatalf("server handshake: %v", err)
			}
		})
	}
}

// The keys are readable by their owner only, even where a key file was
// already there readable by anyone.
func TestKeysAreOwnerOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"tls.key", "client.key"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := write(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls.key", "client.key"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %v, want -rw-------", name, perm)
		}
	}
}
