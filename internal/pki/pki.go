// Package pki gives every Warder listener TLS: it issues and keeps a local
// certificate authority and a server certificate in the data directory, and
// builds the tls.Configs of servers and clients.
//
// Keys are ECDSA P-256. The CA is valid for 10 years and may sign only leaf
// certificates (MaxPathLen 0); server certificates are valid for a year.
// Private keys are written with mode 0600, certificates with 0644, each
// through a temporary file renamed into place, so a crash leaves either the
// old file or the new one.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names in the data directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
	CertFile   = "tls.pem"
	KeyFile    = "tls-key.pem"
)

// Validity periods and the renewal margin.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	certValidity   = 365 * 24 * time.Hour
	renewBefore    = 30 * 24 * time.Hour // reissue what expires sooner than this
	backdate       = time.Hour           // tolerate clients whose clocks lag
	maxPEMFileSize = 1 << 20
)

// Files are the paths of the TLS files in a data directory.
type Files struct {
	CACert string // the CA certificate clients trust (PEM)
	Cert   string // the server certificate (PEM)
	Key    string // the server's private key (PEM, PKCS #8)
}

// EnsureServerTLS makes sure dir holds a CA (ca.pem, ca-key.pem) and a server
// certificate (tls.pem, tls-key.pem) signed by it, valid at now, for hosts
// and for localhost, 127.0.0.1 and ::1. Hosts are IP addresses or DNS names
// (brackets around IPv6 addresses, empty and unspecified addresses such as
// 0.0.0.0 are ignored). dir is created with mode 0700 if missing.
//
// Existing files are reused when the CA is valid for at least 30 more days
// and the server certificate is signed by it, matches its key, is valid for
// at least 30 more days and covers every host. Otherwise the server
// certificate is reissued with a new key, keeping the CA; the CA is replaced
// only when it is missing or expires within 30 days. generated reports
// whether any file was written, so that the caller can log it.
//
// A file that exists but cannot be parsed, a CA certificate without its key
// or not matching it, and a CA not yet valid at now are errors naming the
// file: EnsureServerTLS never overwrites a damaged file, in particular never
// a CA key.
func EnsureServerTLS(dir string, hosts []string, now time.Time) (f Files, generated bool, err error) {
	dns, ips, err := parseHosts(hosts)
	if err != nil {
		return Files{}, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, false, fmt.Errorf("pki: create %s: %w", dir, err)
	}
	f = Files{
		CACert: filepath.Join(dir, CACertFile),
		Cert:   filepath.Join(dir, CertFile),
		Key:    filepath.Join(dir, KeyFile),
	}
	caKeyPath := filepath.Join(dir, CAKeyFile)

	ca, caKey, caNew, err := ensureCA(f.CACert, caKeyPath, now)
	if err != nil {
		return Files{}, false, err
	}
	if !caNew {
		ok, err := serverCertUsable(f.Cert, f.Key, ca, dns, ips, now)
		if err != nil {
			return Files{}, false, err
		}
		if ok {
			return f, false, nil
		}
	}
	if err := issueServerCert(f.Cert, f.Key, ca, caKey, dns, ips, now); err != nil {
		return Files{}, false, err
	}
	return f, true, nil
}

// ensureCA loads the CA, or creates one when it is missing or about to
// expire. created reports whether a new CA certificate was written.
func ensureCA(certPath, keyPath string, now time.Time) (cert *x509.Certificate, key crypto.Signer, created bool, err error) {
	key, err = readKey(keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(certPath); err == nil {
			return nil, nil, false, fmt.Errorf("pki: %s exists but its key %s is missing; restore the key, or remove %s to create a new CA (clients must then trust the new one)", certPath, keyPath, certPath)
		}
		key = nil
	case err != nil:
		return nil, nil, false, err
	}

	if key != nil {
		cert, err = readCert(certPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// The key was written but not the certificate (a crash between
			// the two writes): self-sign the existing key again below.
		case err != nil:
			return nil, nil, false, err
		default:
			if !cert.IsCA || cert.CheckSignatureFrom(cert) != nil {
				return nil, nil, false, fmt.Errorf("pki: %s is not a self-signed CA certificate", certPath)
			}
			if !samePublicKey(cert.PublicKey, key.Public()) {
				return nil, nil, false, fmt.Errorf("pki: %s does not match its key %s", certPath, keyPath)
			}
			if now.Before(cert.NotBefore) {
				return nil, nil, false, fmt.Errorf("pki: %s is not valid until %s; is the clock right?", certPath, cert.NotBefore.UTC().Format(time.RFC3339))
			}
			if now.Add(renewBefore).Before(cert.NotAfter) {
				return cert, key, false, nil
			}
			key = nil // expiring: replace the CA and its key
		}
	}

	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, false, fmt.Errorf("pki: generate CA key: %w", err)
		}
		if err := writeKey(keyPath, k); err != nil {
			return nil, nil, false, err
		}
		key = k
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Warder"}, CommonName: "Warder CA " + hex.EncodeToString(serial.Bytes()[:4])},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, false, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	if err := writeCert(certPath, der); err != nil {
		return nil, nil, false, err
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, false, fmt.Errorf("pki: parse new CA certificate: %w", err)
	}
	return cert, key, true, nil
}

// serverCertUsable reports whether the server certificate and key exist,
// match, chain to ca and cover the hosts for at least renewBefore.
// A file that exists but does not parse is an error.
func serverCertUsable(certPath, keyPath string, ca *x509.Certificate, dns []string, ips []net.IP, now time.Time) (bool, error) {
	key, err := readKey(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cert, err := readCert(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !samePublicKey(cert.PublicKey, key.Public()) || cert.CheckSignatureFrom(ca) != nil {
		return false, nil
	}
	if now.Before(cert.NotBefore) || !now.Add(renewBefore).Before(cert.NotAfter) {
		return false, nil
	}
	for _, d := range dns {
		if !containsString(cert.DNSNames, d) {
			return false, nil
		}
	}
	for _, ip := range ips {
		if !containsIP(cert.IPAddresses, ip) {
			return false, nil
		}
	}
	return true, nil
}

// issueServerCert writes a new key and server certificate signed by ca.
func issueServerCert(certPath, keyPath string, ca *x509.Certificate, caKey crypto.Signer, dns []string, ips []net.IP, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generate server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	notAfter := now.Add(certValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Warder"}, CommonName: dns[0]},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("pki: create server certificate: %w", err)
	}
	// Key first: a crash between the writes leaves a pair that does not
	// match, which the next call replaces.
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writeCert(certPath, der)
}

// parseHosts splits hosts, plus the default hosts, into DNS names and IPs,
// without duplicates. The first DNS name is "localhost".
func parseHosts(hosts []string) (dns []string, ips []net.IP, err error) {
	// Always covered, so that local clients reach the server whatever it
	// listens on.
	all := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	for _, h := range all {
		h = strings.TrimSpace(h)
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
		}
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip.IsUnspecified() {
				continue
			}
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if !containsIP(ips, ip) {
				ips = append(ips, ip)
			}
			continue
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("pki: %q is neither an IP address nor a DNS name", h)
		}
		if !containsString(dns, h) {
			dns = append(dns, h)
		}
	}
	return dns, ips, nil
}

// validDNSName reports whether name is a plausible host name: dot-separated
// labels of letters, digits, '-' and '_', an optional leading "*." wildcard.
func validDNSName(name string) bool {
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func containsIP(list []net.IP, ip net.IP) bool {
	for _, v := range list {
		if v.Equal(ip) {
			return true
		}
	}
	return false
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: serial number: %w", err)
		}
		if n.BitLen() > 64 { // also keeps Bytes() at least 4 long
			return n, nil
		}
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// readPEM reads path and returns its only PEM block, which must be of type typ.
func readPEM(path, typ string) (*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("pki: %w", err)
	}
	if len(data) > maxPEMFileSize {
		return nil, fmt.Errorf("pki: %s is corrupt: larger than %d bytes", path, maxPEMFileSize)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != typ || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("pki: %s is corrupt: want one PEM %q block", path, typ)
	}
	return block, nil
}

func readCert(path string) (*x509.Certificate, error) {
	block, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s is corrupt: %w", path, err)
	}
	return cert, nil
}

func readKey(path string) (crypto.Signer, error) {
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s is corrupt: %w", path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s holds a %T, not a signing key", path, k)
	}
	return signer, nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: encode key for %s: %w", path, err)
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeCert(path string, der []byte) error {
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeAtomic writes data to path through a temporary file in the same
// directory, synced and renamed into place, then syncs the directory.
func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ServerTLSConfig loads a certificate chain and key and returns a server
// configuration accepting TLS 1.2 and 1.3 (1.3 is chosen when the client
// offers it). The files are read once; the result never reloads them.
func ServerTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
	}, nil
}

// ClientTLSConfig returns a client configuration accepting TLS 1.2 and 1.3
// that trusts only the CA certificates in the PEM file caFile, or the
// system's roots when caFile is "".
func ClientTLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("pki: %s holds no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
