package sshca

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// fakeBarrier is an in-memory Barrier with one key per purpose.
type fakeBarrier struct {
	sealed bool
	keys   map[string]ed25519.PrivateKey
}

func (f *fakeBarrier) key(purpose string) (ed25519.PrivateKey, error) {
	if f.sealed {
		return nil, errors.New("sealed")
	}
	if k, ok := f.keys[purpose]; ok {
		return k, nil
	}
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	f.keys[purpose] = k
	return k, nil
}

func (f *fakeBarrier) Sign(_ context.Context, purpose string, msg []byte) ([]byte, error) {
	k, err := f.key(purpose)
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(k, msg), nil
}

func (f *fakeBarrier) PublicKey(_ context.Context, purpose string) (ed25519.PublicKey, error) {
	k, err := f.key(purpose)
	if err != nil {
		return nil, err
	}
	return k.Public().(ed25519.PublicKey), nil
}

func TestIssueUserCert(t *testing.T) {
	b := &fakeBarrier{keys: map[string]ed25519.PrivateKey{}}
	ca, err := Signer(context.Background(), b, PurposeUserCA)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	spub, _ := gossh.NewPublicKey(pub)
	now := time.Now()
	cert, err := IssueUserCert(ca, UserCert{Key: string(gossh.MarshalAuthorizedKey(spub)), Principal: "user:alice", Now: now, ValidBefore: now.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := time.Unix(int64(cert.ValidBefore), 0), now.Add(MaxUserCertTTL); got.After(want) {
		t.Errorf("valid before %v, want at most %v", got, want)
	}
	checker := gossh.CertChecker{IsUserAuthority: func(k gossh.PublicKey) bool {
		return string(k.Marshal()) == string(ca.PublicKey().Marshal())
	}}
	if _, err := checker.Authenticate(connMeta{"user:alice"}, cert); err != nil {
		t.Errorf("certificate rejected: %v", err)
	}
	if _, err := checker.Authenticate(connMeta{"user:bob"}, cert); err == nil {
		t.Error("certificate accepted for another principal")
	}
	if _, ok := cert.Permissions.Extensions["permit-port-forwarding"]; ok {
		t.Error("certificate permits port forwarding")
	}

	for _, bad := range []string{"", "garbage", string(gossh.MarshalAuthorizedKey(cert))} {
		if _, err := IssueUserCert(ca, UserCert{Key: bad, Principal: "user:alice", Now: now}); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("key %.20q: err %v, want ErrInvalidKey", bad, err)
		}
	}
	b.sealed = true
	if _, err := Signer(context.Background(), b, PurposeHostKey); err == nil {
		t.Error("Signer succeeded sealed")
	}
}

type connMeta struct{ user string }

func (c connMeta) User() string        { return c.user }
func (connMeta) SessionID() []byte     { return nil }
func (connMeta) ClientVersion() []byte { return nil }
func (connMeta) ServerVersion() []byte { return nil }
func (connMeta) RemoteAddr() net.Addr  { return &net.TCPAddr{} }
func (connMeta) LocalAddr() net.Addr   { return &net.TCPAddr{} }

func TestIssueHostCert(t *testing.T) {
	b := &fakeBarrier{keys: map[string]ed25519.PrivateKey{}}
	ca, err := Signer(context.Background(), b, PurposeHostCA)
	if err != nil {
		t.Fatal(err)
	}
	host, err := Signer(context.Background(), b, PurposeHostKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := IssueHostCert(ca, HostCert{Key: host.PublicKey(), Principals: []string{"web1.warder", "web1"}, Now: now, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := time.Unix(int64(cert.ValidBefore), 0), now.Add(MaxHostCertTTL); got.After(want) {
		t.Errorf("valid before %v, want at most %v", got, want)
	}
	checker := gossh.CertChecker{IsHostAuthority: func(k gossh.PublicKey, _ string) bool {
		return string(k.Marshal()) == string(ca.PublicKey().Marshal())
	}}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{{"web1.warder:22", true}, {"web1:22", true}, {"web2.warder:22", false}} {
		if err := checker.CheckHostKey(tc.addr, nil, cert); (err == nil) != tc.ok {
			t.Errorf("CheckHostKey(%s): %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
	// The gateway presents it with its host key.
	if _, err := gossh.NewCertSigner(cert, host); err != nil {
		t.Errorf("NewCertSigner: %v", err)
	}
	for name, req := range map[string]HostCert{
		"no principal":  {Key: host.PublicKey(), Now: now},
		"wildcard":      {Key: host.PublicKey(), Principals: []string{"*.warder"}, Now: now},
		"no key":        {Principals: []string{"web1"}, Now: now},
		"a certificate": {Key: cert, Principals: []string{"web1"}, Now: now},
	} {
		if _, err := IssueHostCert(ca, req); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

func TestNewAccessLogin(t *testing.T) {
	b := &fakeBarrier{keys: map[string]ed25519.PrivateKey{}}
	ca, err := Signer(context.Background(), b, PurposeAccessCA)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l, err := NewAccessLogin(ca, AccessCert{Account: "root", KeyID: "warder:user:alice:1", Now: now, ValidBefore: now.Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Cert
	if c.KeyId != "warder:user:alice:1" || len(c.ValidPrincipals) != 1 || c.ValidPrincipals[0] != "root" || c.CertType != gossh.UserCert {
		t.Errorf("certificate %+v", c)
	}
	if got, want := time.Unix(int64(c.ValidBefore), 0), now.Add(MaxAccessCertTTL); got.After(want) {
		t.Errorf("valid before %v, want at most %v", got, want)
	}
	if len(c.Permissions.Extensions) != 1 || len(c.Permissions.CriticalOptions) != 0 {
		t.Errorf("permissions %+v, want permit-pty only", c.Permissions)
	}
	if string(l.Signer.PublicKey().Marshal()) != string(c.Marshal()) {
		t.Error("the signer does not present the certificate")
	}
	l2, err := NewAccessLogin(ca, AccessCert{Account: "root", KeyID: "warder:user:alice:2", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if string(l2.Cert.Key.Marshal()) == string(c.Key.Marshal()) {
		t.Error("two logins share a key")
	}
	for name, req := range map[string]AccessCert{
		"no account": {KeyID: "k", Now: now},
		"no key id":  {Account: "root", Now: now},
		"expired":    {Account: "root", KeyID: "k", Now: now, ValidBefore: now.Add(-time.Second)},
	} {
		if _, err := NewAccessLogin(ca, req); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}
