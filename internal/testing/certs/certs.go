// Package certs issues throwaway X.509 certificates for tests: certificate
// authorities, server certificates for the loopback address, and client
// certificates, each as PEM (what the service and PostgreSQL read from
// their files) and as crypto/tls values (what a test client presents).
// Keys are ECDSA P-256, quick enough to make afresh in every test.
//
// NewCA, Server, Client and ClientWithSANs fail the test on an error.
// MakeCA, MakeServer and MakeClient return it instead, for pgtest, which
// also starts servers outside any test, and scripts/devcerts.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// CA is a certificate authority that issues certificates.
type CA struct {
	Cert *x509.Certificate
	// PEM is the CA certificate, as a client CA file or a client's trust
	// anchor holds it.
	PEM []byte
	key *ecdsa.PrivateKey
}

// Cert is an issued certificate with its private key.
type Cert struct {
	Leaf    *x509.Certificate
	CertPEM []byte
	// KeyPEM is the key in PKCS #8, which Go and PostgreSQL both read.
	KeyPEM []byte
}

// NewCA returns a self-signed CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := MakeCA(name)
	check(t, err)
	return ca
}

// MakeCA is NewCA outside a test.
func MakeCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := template(name)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	cert, certPEM, err := create(tmpl, tmpl, key, key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, PEM: certPEM, key: key}, nil
}

// Pool returns a pool that trusts ca alone.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Server issues a server certificate named name for 127.0.0.1, ::1 and
// localhost, so that a client may dial any of them.
func (ca *CA) Server(t testing.TB, name string) *Cert {
	t.Helper()
	c, err := ca.MakeServer(name)
	check(t, err)
	return c
}

// MakeServer is Server outside a test.
func (ca *CA) MakeServer(name string) (*Cert, error) {
	tmpl, err := template(name)
	if err != nil {
		return nil, err
	}
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return ca.issue(tmpl)
}

// Client issues a client certificate named name.
func (ca *CA) Client(t testing.TB, name string) *Cert {
	t.Helper()
	c, err := ca.MakeClient(name)
	check(t, err)
	return c
}

// MakeClient is Client outside a test.
func (ca *CA) MakeClient(name string) (*Cert, error) {
	tmpl, err := template(name)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(tmpl)
}

// ClientWithSANs issues a client certificate named name whose subject
// alternative names are the DNS names dnsNames and the URIs uris (such as
// spiffe://cluster.local/ns/platform/sa/gateway): what a service that
// tells its clients apart by SAN, rather than by common name, reads.
func (ca *CA) ClientWithSANs(t testing.TB, name string, dnsNames, uris []string) *Cert {
	t.Helper()
	tmpl, err := template(name)
	check(t, err)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = dnsNames
	for _, s := range uris {
		u, err := url.Parse(s)
		check(t, err)
		tmpl.URIs = append(tmpl.URIs, u)
	}
	c, err := ca.issue(tmpl)
	check(t, err)
	return c
}

// TLS returns c as a certificate a crypto/tls peer presents.
func (c *Cert) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	check(t, err)
	return pair
}

// ClientConfig returns a client's TLS configuration: trusting roots and,
// when cert is not nil, presenting cert whatever CAs the server says it
// accepts. A Go client would otherwise hold back a certificate that none
// of those CAs issued, and the server's own check of it would go untested.
func ClientConfig(t testing.TB, roots *x509.CertPool, cert *Cert) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		pair := cert.TLS(t)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return cfg
}

// WriteFile writes data to path, readable by its owner only, as a private
// key must be.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	check(t, os.WriteFile(path, data, 0o600))
}

func (ca *CA) issue(tmpl *x509.Certificate) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, certPEM, err := create(tmpl, ca.Cert, key, ca.key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Cert{Leaf: cert, CertPEM: certPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}, nil
}

// template is what every certificate has: a random serial number, so that
// two certificates of one name still tell apart, and a validity that
// started an hour ago, so that clock skew between test steps is no matter.
func template(name string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}, nil
}

func create(tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) (*x509.Certificate, []byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("certs: %v", err)
	}
}
