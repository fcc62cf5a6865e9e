package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/identity"
)

// TestSSHCertificate checks that a user gets a certificate for itself,
// signed by the user CA that /v1/sys/ssh reports, no longer than its token.
func TestSSHCertificate(t *testing.T) {
	f := newFixture(t)
	if r := f.do(t, "GET", "/v1/sys/ssh", "", ""); r.status != 503 {
		t.Errorf("GET /v1/sys/ssh sealed: %d, want 503", r.status)
	}
	f.initAndUnseal(t)
	if _, err := f.id.CreateUser(context.Background(), audit.Origin{Actor: "test"}, identity.UserSpec{Name: "carol", Password: []byte("correct horse battery")}); err != nil {
		t.Fatal(err)
	}
	tok := f.login(t, "carol", "correct horse battery")

	r := f.do(t, "GET", "/v1/sys/ssh", "", "")
	var info api.SSHInfo
	if err := json.Unmarshal([]byte(r.body), &info); err != nil || r.status != 200 {
		t.Fatalf("GET /v1/sys/ssh: %d %s", r.status, r.body)
	}
	ca, _, _, _, err := gossh.ParseAuthorizedKey([]byte(info.UserCA))
	if err != nil {
		t.Fatalf("user_ca %q: %v", info.UserCA, err)
	}
	// Four distinct keys: the user CA, the gateway's host key, its host
	// CA and the host-access CA.
	seen := map[string]string{}
	for name, line := range map[string]string{"user_ca": info.UserCA, "host_key": info.HostKey, "host_ca_key": info.HostCAKey, "access_ca_key": info.AccessCAKey} {
		k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			t.Fatalf("%s %q: %v", name, line, err)
		}
		if other, dup := seen[string(k.Marshal())]; dup {
			t.Errorf("%s is the same key as %s", name, other)
		}
		seen[string(k.Marshal())] = name
	}

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	spub, _ := gossh.NewPublicKey(pub)
	body, _ := json.Marshal(api.SSHCertificateRequest{PublicKey: string(gossh.MarshalAuthorizedKey(spub))})
	r = f.do(t, "POST", "/v1/auth/ssh/certificate", tok, string(body))
	var res api.SSHCertificateResponse
	if err := json.Unmarshal([]byte(r.body), &res); err != nil || r.status != 200 {
		t.Fatalf("certificate: %d %s", r.status, r.body)
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(res.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	cert := k.(*gossh.Certificate)
	checker := gossh.CertChecker{IsUserAuthority: func(k gossh.PublicKey) bool { return string(k.Marshal()) == string(ca.Marshal()) }}
	if _, err := checker.Authenticate(meta("user:carol"), cert); err != nil {
		t.Errorf("certificate not valid for user:carol: %v", err)
	}
	if cert.KeyId != "user:carol" || time.Until(res.ValidBefore) > 8*time.Hour {
		t.Errorf("key id %q, valid before %v", cert.KeyId, res.ValidBefore)
	}

	if r := f.do(t, "POST", "/v1/auth/ssh/certificate", tok, `{"public_key":"ssh-ed25519 garbage"}`); r.status != 400 {
		t.Errorf("bad key: %d %s, want 400", r.status, r.body)
	}
}

type meta string

func (m meta) User() string        { return string(m) }
func (meta) SessionID() []byte     { return nil }
func (meta) ClientVersion() []byte { return nil }
func (meta) ServerVersion() []byte { return nil }
func (meta) RemoteAddr() net.Addr  { return &net.TCPAddr{} }
func (meta) LocalAddr() net.Addr   { return &net.TCPAddr{} }
