package broker_test

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
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/internal/brokertest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tether-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	cfg := brokertest.Config(t)
	var pool *x509.CertPool
	cfg.TLSCertFile, cfg.TLSKeyFile, pool = selfSigned(t, t.TempDir())
	b := brokertest.Start(t, cfg)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	for _, url := range []string{"ssl://" + b.Addrs().MQTT, "wss://" + b.Addrs().WS + "/mqtt"} {
		t.Run(url[:3], func(t *testing.T) {
			c := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token).SetTLSConfig(tlsCfg))
			got := brokertest.NewMessages(1)
			require.NoError(t, brokertest.Wait(c.Subscribe("sessions/alice/tls/#", 1, got.Handler)))
			require.NoError(t, brokertest.Wait(c.Publish("sessions/alice/tls/data", 1, false, "secret")))
			require.Equal(t, "secret", string(got.Next(t, 2*time.Second).Payload()))
		})
	}
	// Plain MQTT on the TLS port does not get through.
	_, err := brokertest.Connect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", token).SetConnectTimeout(2*time.Second))
	require.Error(t, err)
}

func TestTLSBadFiles(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(t.TempDir(), "missing.pem"), filepath.Join(t.TempDir(), "missing.key")
	_, err := brokerOpen(cfg)
	require.ErrorContains(t, err, "tls-cert/tls-key")
}
