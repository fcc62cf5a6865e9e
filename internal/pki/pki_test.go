package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ensure calls EnsureServerTLS and fails the test on error.
func ensure(t *testing.T, dir string, hosts []string, now time.Time) (Files, bool) {
	t.Helper()
	f, gen, err := EnsureServerTLS(dir, hosts, now)
	if err != nil {
		t.Fatalf("EnsureServerTLS: %v", err)
	}
	return f, gen
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := readCert(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake serves one TLS connection with serverCfg on 127.0.0.1 and dials
// it with clientCfg as serverName, returning the client's error.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config, network, addr, serverName string) (*tls.ConnectionState, error) {
	t.Helper()
	ln, err := tls.Listen(network, addr, serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hello")
	}()
	defer func() { <-done }()
	cfg := clientCfg.Clone()
	cfg.ServerName = serverName
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, network, ln.Addr().String(), cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read over TLS = %q, %v", buf, err)
	}
	st := conn.ConnectionState()
	return &st, nil
}

func TestHandshake(t *testing.T) {
	dir := t.TempDir()
	f, gen := ensure(t, dir, []string{"warder.example", "10.1.2.3"}, time.Now())
	if !gen {
		t.Error("first call: generated = false, want true")
	}
	srv, err := ServerTLSConfig(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ClientTLSConfig(f.CACert)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "localhost", "warder.example", "10.1.2.3"} {
		t.Run(name, func(t *testing.T) {
			st, err := handshake(t, srv, cli, "tcp", "127.0.0.1:0", name)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if st.Version != tls.VersionTLS13 {
				t.Errorf("version = %x, want TLS 1.3", st.Version)
			}
		})
	}
	t.Run("tls1.2 client", func(t *testing.T) {
		c := cli.Clone()
		c.MaxVersion = tls.VersionTLS12
		st, err := handshake(t, srv, c, "tcp", "127.0.0.1:0", "127.0.0.1")
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if st.Version != tls.VersionTLS12 {
			t.Errorf("version = %x, want TLS 1.2", st.Version)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		} else {
			ln.Close()
		}
		if _, err := handshake(t, srv, cli, "tcp6", "[::1]:0", "::1"); err != nil {
			t.Fatalf("handshake: %v", err)
		}
	})
	t.Run("name not covered", func(t *testing.T) {
		if _, err := handshake(t, srv, cli, "tcp", "127.0.0.1:0", "other.example"); err == nil {
			t.Fatal("handshake succeeded for a name the certificate does not cover")
		}
	})
	t.Run("other CA", func(t *testing.T) {
		other, _ := ensure(t, t.TempDir(), nil, time.Now())
		c, err := ClientTLSConfig(other.CACert)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, srv, c, "tcp", "127.0.0.1:0", "127.0.0.1"); err == nil {
			t.Fatal("handshake succeeded with a client trusting another CA")
		}
	})
	t.Run("system roots", func(t *testing.T) {
		c, err := ClientTLSConfig("")
		if err != nil {
			t.Fatal(err)
		}
		if c.RootCAs != nil {
			t.Error("RootCAs set for caFile \"\"")
		}
		if _, err := handshake(t, srv, c, "tcp", "127.0.0.1:0", "127.0.0.1"); err == nil {
			t.Fatal("handshake succeeded with system roots")
		}
	})
}

func TestCertificates(t *testing.T) {
	now := time.Now()
	f, _ := ensure(t, t.TempDir(), []string{"[::1]", "0.0.0.0", "", "Warder.Example."}, now)
	ca, cert := mustCert(t, f.CACert), mustCert(t, f.Cert)
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA=%v MaxPathLen=%d zero=%v usage=%v", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero, ca.KeyUsage)
	}
	if d := ca.NotAfter.Sub(now); d < 9*365*24*time.Hour {
		t.Errorf("CA valid for %s, want about 10 years", d)
	}
	if cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server cert: IsCA=%v usage=%v ext=%v", cert.IsCA, cert.KeyUsage, cert.ExtKeyUsage)
	}
	if d := cert.NotAfter.Sub(now); d < 360*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("server cert valid for %s, want about a year", d)
	}
	for _, c := range []*x509.Certificate{ca, cert} {
		if c.SerialNumber.BitLen() < 64 || c.SerialNumber.BitLen() > 128 || c.SerialNumber.Sign() <= 0 {
			t.Errorf("serial %x is not a random positive 128-bit number", c.SerialNumber)
		}
	}
	if !strings.EqualFold(strings.Join(cert.DNSNames, ","), "localhost,warder.example") {
		t.Errorf("DNSNames = %v", cert.DNSNames)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if strings.Join(ips, ",") != "127.0.0.1,::1" {
		t.Errorf("IPAddresses = %v, want 127.0.0.1 and ::1 once each, no 0.0.0.0", ips)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		t.Errorf("server cert not signed by CA: %v", err)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	f, _ := ensure(t, dir, nil, time.Now())
	tests := []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{f.CACert, 0o644},
		{filepath.Join(dir, CAKeyFile), 0o600},
		{f.Cert, 0o644},
		{f.Key, 0o600},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			fi, err := os.Stat(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != tt.mode {
				t.Errorf("mode = %v, want %v", fi.Mode(), tt.mode)
			}
		})
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("dir holds %d entries, want 4 (no temporary files left)", len(entries))
	}
}

func TestReuseAndReissue(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	f, gen := ensure(t, dir, []string{"a.example"}, now)
	if !gen {
		t.Fatal("first call: generated = false")
	}
	caPEM, certPEM, keyPEM := mustRead(t, f.CACert), mustRead(t, f.Cert), mustRead(t, f.Key)
	caKeyPEM := mustRead(t, filepath.Join(dir, CAKeyFile))

	sameCA := func(t *testing.T) {
		t.Helper()
		if !bytes.Equal(mustRead(t, f.CACert), caPEM) || !bytes.Equal(mustRead(t, filepath.Join(dir, CAKeyFile)), caKeyPEM) {
			t.Error("CA was replaced")
		}
		if err := mustCert(t, f.Cert).CheckSignatureFrom(mustCert(t, f.CACert)); err != nil {
			t.Errorf("server cert not signed by the CA: %v", err)
		}
	}
	tests := []struct {
		name    string
		hosts   []string
		now     time.Time
		reissue bool
	}{
		{"same hosts", []string{"a.example"}, now, false},
		{"subset of hosts", nil, now, false},
		{"later but not expiring", []string{"A.example"}, now.Add(300 * 24 * time.Hour), false},
		{"host added", []string{"a.example", "b.example"}, now, true},
		{"ip added", []string{"a.example", "b.example", "192.0.2.7"}, now, true},
		{"expiring within 30 days", []string{"a.example", "b.example", "192.0.2.7"}, now.Add(340 * 24 * time.Hour), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, gen := ensure(t, dir, tt.hosts, tt.now)
			if gen != tt.reissue {
				t.Errorf("generated = %v, want %v", gen, tt.reissue)
			}
			changed := !bytes.Equal(mustRead(t, f.Cert), certPEM) || !bytes.Equal(mustRead(t, f.Key), keyPEM)
			if changed != tt.reissue {
				t.Errorf("server cert changed = %v, want %v", changed, tt.reissue)
			}
			certPEM, keyPEM = mustRead(t, f.Cert), mustRead(t, f.Key)
			sameCA(t)
		})
	}
}

func TestRecovery(t *testing.T) {
	t.Run("server key missing", func(t *testing.T) {
		dir := t.TempDir()
		f, _ := ensure(t, dir, nil, time.Now())
		ca := mustRead(t, f.CACert)
		os.Remove(f.Key)
		if _, gen := ensure(t, dir, nil, time.Now()); !gen {
			t.Error("generated = false after the server key was removed")
		}
		if !bytes.Equal(mustRead(t, f.CACert), ca) {
			t.Error("CA replaced")
		}
	})
	t.Run("server key of another pair", func(t *testing.T) {
		dir, other := t.TempDir(), t.TempDir()
		f, _ := ensure(t, dir, nil, time.Now())
		g, _ := ensure(t, other, nil, time.Now())
		os.WriteFile(f.Key, mustRead(t, g.Key), 0o600)
		if _, gen := ensure(t, dir, nil, time.Now()); !gen {
			t.Error("generated = false for a mismatched pair")
		}
		if _, err := ServerTLSConfig(f.Cert, f.Key); err != nil {
			t.Errorf("pair unusable after reissue: %v", err)
		}
	})
	t.Run("CA cert missing, key present", func(t *testing.T) {
		dir := t.TempDir()
		f, _ := ensure(t, dir, nil, time.Now())
		caKey := mustRead(t, filepath.Join(dir, CAKeyFile))
		os.Remove(f.CACert)
		if _, gen := ensure(t, dir, nil, time.Now()); !gen {
			t.Error("generated = false")
		}
		if !bytes.Equal(mustRead(t, filepath.Join(dir, CAKeyFile)), caKey) {
			t.Error("CA key replaced; want the existing key self-signed again")
		}
	})
	t.Run("CA expiring", func(t *testing.T) {
		dir := t.TempDir()
		now := time.Now()
		f, _ := ensure(t, dir, nil, now)
		ca := mustRead(t, f.CACert)
		later := now.Add(caValidity - 10*24*time.Hour)
		if _, gen := ensure(t, dir, nil, later); !gen {
			t.Error("generated = false")
		}
		if bytes.Equal(mustRead(t, f.CACert), ca) {
			t.Error("expiring CA kept")
		}
		if err := mustCert(t, f.Cert).CheckSignatureFrom(mustCert(t, f.CACert)); err != nil {
			t.Error(err)
		}
	})
}

func TestCorruptFiles(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		data   string // "" removes the file
		errHas string
	}{
		{"garbage CA key", CAKeyFile, "not a key", CAKeyFile + " is corrupt"},
		{"CA key bad DER", CAKeyFile, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", CAKeyFile + " is corrupt"},
		{"CA key missing", CAKeyFile, "", "its key"},
		{"garbage CA cert", CACertFile, "junk", CACertFile + " is corrupt"},
		{"CA cert of wrong type", CACertFile, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", CACertFile + " is corrupt"},
		{"garbage server cert", CertFile, "\x00\x01", CertFile + " is corrupt"},
		{"garbage server key", KeyFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", KeyFile + " is corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ensure(t, dir, nil, time.Now())
			path := filepath.Join(dir, tt.file)
			if tt.data == "" {
				os.Remove(path)
			} else if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			before := map[string][]byte{}
			for _, n := range []string{CACertFile, CAKeyFile, CertFile, KeyFile} {
				before[n], _ = os.ReadFile(filepath.Join(dir, n))
			}
			_, _, err := EnsureServerTLS(dir, nil, time.Now())
			if err == nil || !strings.Contains(err.Error(), tt.errHas) || !strings.HasPrefix(err.Error(), "pki: ") {
				t.Fatalf("EnsureServerTLS = %v, want an error containing %q", err, tt.errHas)
			}
			for n, b := range before {
				after, _ := os.ReadFile(filepath.Join(dir, n))
				if !bytes.Equal(after, b) {
					t.Errorf("%s changed", n)
				}
			}
		})
	}
	t.Run("CA and key mismatch", func(t *testing.T) {
		dir, other := t.TempDir(), t.TempDir()
		ensure(t, dir, nil, time.Now())
		ensure(t, other, nil, time.Now())
		os.WriteFile(filepath.Join(dir, CAKeyFile), mustRead(t, filepath.Join(other, CAKeyFile)), 0o600)
		_, _, err := EnsureServerTLS(dir, nil, time.Now())
		if err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("EnsureServerTLS = %v, want a mismatch error", err)
		}
	})
	t.Run("CA not yet valid", func(t *testing.T) {
		dir := t.TempDir()
		now := time.Now()
		ensure(t, dir, nil, now)
		_, _, err := EnsureServerTLS(dir, nil, now.Add(-48*time.Hour))
		if err == nil || !strings.Contains(err.Error(), "clock") {
			t.Fatalf("EnsureServerTLS = %v, want a clock error", err)
		}
	})
}

func TestBadHosts(t *testing.T) {
	for _, h := range []string{"exa mple", "a..b", "-a.example", "a/b", "ümlaut.example"} {
		t.Run(h, func(t *testing.T) {
			if _, _, err := EnsureServerTLS(t.TempDir(), []string{h}, time.Now()); err == nil {
				t.Fatalf("host %q accepted", h)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	f, _ := ensure(t, dir, nil, time.Now())
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("junk"), 0o644)
	tests := []struct {
		name string
		fn   func() error
		has  string
	}{
		{"server cert missing", func() error { _, err := ServerTLSConfig(filepath.Join(dir, "nope.pem"), f.Key); return err }, "nope.pem"},
		{"server key junk", func() error { _, err := ServerTLSConfig(f.Cert, junk); return err }, "junk.pem"},
		{"client CA missing", func() error { _, err := ClientTLSConfig(filepath.Join(dir, "nope.pem")); return err }, "nope.pem"},
		{"client CA junk", func() error { _, err := ClientTLSConfig(junk); return err }, "junk.pem holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.fn()
			if err == nil || !strings.Contains(err.Error(), tt.has) || !strings.HasPrefix(err.Error(), "pki: ") {
				t.Fatalf("err = %v, want pki: error containing %q", err, tt.has)
			}
		})
	}
	srv, err := ServerTLSConfig(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ClientTLSConfig(f.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if srv.MinVersion != tls.VersionTLS12 || cli.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion server %x client %x, want TLS 1.2", srv.MinVersion, cli.MinVersion)
	}
}
