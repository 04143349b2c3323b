package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLS is the TLS setup of a server started by StartTLS or NewTLSServer.
type TLS struct {
	CertFile, KeyFile, CAFile string // passed to --tls-cert-file, --tls-key-file, --tls-ca-cert-file
	// AuthClients requires clients to present a certificate signed by the CA
	// (--tls-auth-clients yes); otherwise certificates are optional.
	AuthClients bool
	// Client is the configuration the helpers (readiness check, Conn, Do) use
	// to connect; it must trust the server and carry a client certificate
	// when AuthClients is set.
	Client *tls.Config
}

// Certs is a throw-away PKI written to a test's temporary directory: a CA,
// a server certificate for 127.0.0.1, ::1 and localhost, and a client
// certificate, all signed by the CA. Keys are ECDSA P-256.
type Certs struct {
	CAFile                string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	CAPool                *x509.CertPool
	ClientKeyPair         tls.Certificate
}

// NewCerts generates a fresh PKI; it fails tb on error. Two calls give two
// unrelated CAs (for wrong-CA tests).
func NewCerts(tb testing.TB) *Certs {
	tb.Helper()
	c, err := newCerts(tb.TempDir())
	if err != nil {
		tb.Fatalf("redistest: generating certificates: %v", err)
	}
	return c
}

// ServerTLS returns the server setup for these certificates, with a client
// configuration that trusts the CA and presents the client certificate.
func (c *Certs) ServerTLS(authClients bool) *TLS {
	return &TLS{CertFile: c.ServerCert, KeyFile: c.ServerKey, CAFile: c.CAFile, AuthClients: authClients, Client: c.ClientConfig()}
}

// ClientConfig returns a new client configuration trusting the CA and
// presenting the client certificate.
func (c *Certs) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.CAPool, Certificates: []tls.Certificate{c.ClientKeyPair}, MinVersion: tls.VersionTLS12}
}

func newCerts(dir string) (*Certs, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	c := &Certs{CAFile: filepath.Join(dir, "ca.pem"), CAPool: x509.NewCertPool()}
	c.CAPool.AddCert(ca)
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	issue := func(serial int64, name string, usage x509.ExtKeyUsage, server bool) (certFile, keyFile string, pair tls.Certificate, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err = writePEM(certFile, "CERTIFICATE", der); err != nil {
			return
		}
		if err = writePEM(keyFile, "EC PRIVATE KEY", keyDER); err != nil {
			return
		}
		pair, err = tls.LoadX509KeyPair(certFile, keyFile)
		return
	}
	if c.ServerCert, c.ServerKey, _, err = issue(2, "server", x509.ExtKeyUsageServerAuth, true); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	if c.ClientCert, c.ClientKey, c.ClientKeyPair, err = issue(3, "client", x509.ExtKeyUsageClientAuth, false); err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return c, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// args returns the redis-server arguments that serve TLS only on port.
func (t *TLS) args(port int) []string {
	auth := "optional"
	if t.AuthClients {
		auth = "yes"
	}
	return []string{
		"--port", "0",
		"--tls-port", fmt.Sprint(port),
		"--tls-cert-file", t.CertFile,
		"--tls-key-file", t.KeyFile,
		"--tls-ca-cert-file", t.CAFile,
		"--tls-auth-clients", auth,
	}
}
