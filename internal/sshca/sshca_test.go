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
