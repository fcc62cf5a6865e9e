package sshca

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/testenv"
)

// TestAccessLoginSSHD logs in to a real sshd that trusts the access CA
// (TrustedUserCAKeys) with an access login, as an account that has no key
// and no password.
func TestAccessLoginSSHD(t *testing.T) {
	b := &fakeBarrier{keys: map[string]ed25519.PrivateKey{}}
	ca, err := Signer(context.Background(), b, PurposeAccessCA)
	if err != nil {
		t.Fatal(err)
	}
	s := testenv.SSHDWith(t, testenv.SSHDOptions{TrustedUserCAKeys: []string{string(gossh.MarshalAuthorizedKey(ca.PublicKey()))}})
	u := testenv.LinuxUser(t, "")
	other := testenv.LinuxUser(t, "")
	hostKey, _, _, _, err := gossh.ParseAuthorizedKey([]byte(s.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l, err := NewAccessLogin(ca, AccessCert{Account: u.Username, KeyID: "warder:user:alice:t1", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	login := func(user string, signer gossh.Signer) (*gossh.Client, error) {
		return gossh.Dial("tcp", s.Addr(), &gossh.ClientConfig{
			User: user, Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
			HostKeyCallback: gossh.FixedHostKey(hostKey), Timeout: 10 * time.Second,
		})
	}
	c, err := login(u.Username, l.Signer)
	if err != nil {
		t.Fatalf("login with the access certificate: %v", err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("id -un")
	if err != nil || strings.TrimSpace(string(out)) != u.Username {
		t.Fatalf("id -un: %q, %v", out, err)
	}
	if !strings.Contains(s.Log(t), "warder:user:alice:t1") {
		t.Error("sshd did not log the certificate's key id")
	}
	// The certificate names one account only.
	if c, err := login(other.Username, l.Signer); err == nil {
		c.Close()
		t.Error("the certificate logged in as another account")
	}
	// A certificate from another CA is refused.
	otherCA, err := Signer(context.Background(), b, PurposeUserCA)
	if err != nil {
		t.Fatal(err)
	}
	l3, err := NewAccessLogin(otherCA, AccessCert{Account: u.Username, KeyID: "k", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := login(u.Username, l3.Signer); err == nil {
		c.Close()
		t.Error("a certificate of another CA logged in")
	}
}
