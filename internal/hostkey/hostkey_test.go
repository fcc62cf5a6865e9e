package hostkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/testenv"
)

func newSigner(t testing.TB) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func line(k gossh.PublicKey) string { return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k))) }

type certOpts struct {
	typ        uint32
	principals []string
	after      time.Time
	before     time.Time
	critical   map[string]string
}

func hostCert(t *testing.T, ca gossh.Signer, key gossh.PublicKey, o certOpts) *gossh.Certificate {
	t.Helper()
	if o.typ == 0 {
		o.typ = gossh.HostCert
	}
	if o.after.IsZero() {
		o.after = time.Now().Add(-time.Minute)
	}
	if o.before.IsZero() {
		o.before = time.Now().Add(time.Hour)
	}
	c := &gossh.Certificate{Key: key, CertType: o.typ, ValidPrincipals: o.principals,
		ValidAfter: uint64(o.after.Unix()), ValidBefore: uint64(o.before.Unix()),
		Permissions: gossh.Permissions{CriticalOptions: o.critical}}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParse(t *testing.T) {
	a, b := newSigner(t).PublicKey(), newSigner(t).PublicKey()
	cert := hostCert(t, newSigner(t), a, certOpts{principals: []string{"h"}})
	for _, tc := range []struct {
		name, hostKey, hostCA string
		ok                    bool
	}{
		{"pinned", line(a), "", true},
		{"ca", "", line(b) + " my host CA", true},
		{"both", line(a), line(b), true},
		{"neither", "", "  ", false},
		{"garbage", "ssh-ed25519 AAAA", "", false},
		{"two keys", line(a) + "\n" + line(b), "", false},
		{"ca is a certificate", "", line(cert), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Parse(tc.hostKey, tc.hostCA)
			if (err == nil) != tc.ok {
				t.Fatalf("Parse: %v, want ok=%v", err, tc.ok)
			}
			if err == nil && (v.Pinned == nil) != (tc.hostKey == "") {
				t.Errorf("pinned %v", v.Pinned)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	ca, otherCA := newSigner(t), newSigner(t)
	host, other := newSigner(t).PublicKey(), newSigner(t).PublicKey()
	good := hostCert(t, ca, host, certOpts{principals: []string{"db1.internal", "10.0.0.5"}})
	tests := []struct {
		name string
		v    Verifier
		addr string
		key  gossh.PublicKey
		ok   bool
	}{
		{"pinned", Verifier{Pinned: host}, "db1.internal:22", host, true},
		{"pinned, other key", Verifier{Pinned: host}, "db1.internal:22", other, false},
		{"pinned, certificate of the pinned key", Verifier{Pinned: host}, "db1.internal:22", good, false},
		{"ca", Verifier{CA: ca.PublicKey()}, "db1.internal:22", good, true},
		{"ca, by address", Verifier{CA: ca.PublicKey()}, "10.0.0.5:2222", good, true},
		{"ca, plain key", Verifier{CA: ca.PublicKey()}, "db1.internal:22", host, false},
		{"ca, other host", Verifier{CA: ca.PublicKey()}, "db2.internal:22", good, false},
		{"ca, other CA", Verifier{CA: ca.PublicKey()}, "db1.internal:22", hostCert(t, otherCA, host, certOpts{principals: []string{"db1.internal"}}), false},
		{"ca, expired", Verifier{CA: ca.PublicKey()}, "db1.internal:22", hostCert(t, ca, host, certOpts{principals: []string{"db1.internal"}, after: time.Now().Add(-2 * time.Hour), before: time.Now().Add(-time.Hour)}), false},
		{"ca, user certificate", Verifier{CA: ca.PublicKey()}, "db1.internal:22", hostCert(t, ca, host, certOpts{typ: gossh.UserCert, principals: []string{"db1.internal"}}), false},
		{"ca, no principals", Verifier{CA: ca.PublicKey()}, "db1.internal:22", hostCert(t, ca, host, certOpts{}), false},
		{"ca, critical option", Verifier{CA: ca.PublicKey()}, "db1.internal:22", hostCert(t, ca, host, certOpts{principals: []string{"db1.internal"}, critical: map[string]string{"x": ""}}), false},
		{"both, pinned", Verifier{Pinned: other, CA: ca.PublicKey()}, "db1.internal:22", other, true},
		{"both, certificate", Verifier{Pinned: other, CA: ca.PublicKey()}, "db1.internal:22", good, true},
		{"zero verifier", Verifier{}, "db1.internal:22", host, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.v.Check(tt.addr, nil, tt.key)
			if (err == nil) != tt.ok {
				t.Fatalf("Check: %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				return
			}
			var me *MismatchError
			if !errors.Is(err, ErrMismatch) || !errors.As(err, &me) || string(me.Got.Marshal()) != string(tt.key.Marshal()) {
				t.Errorf("error %v is not a MismatchError for the key", err)
			}
		})
	}
}

func TestAlgorithms(t *testing.T) {
	ca, host := newSigner(t).PublicKey(), newSigner(t).PublicKey()
	if got := (Verifier{Pinned: host}).Algorithms(); !slices.Equal(got, []string{gossh.KeyAlgoED25519}) {
		t.Errorf("pinned: %q", got)
	}
	got := (Verifier{CA: ca}).Algorithms()
	if got[0] != gossh.CertAlgoED25519v01 || !slices.Contains(got, gossh.KeyAlgoED25519) {
		t.Errorf("ca: %q", got)
	}
	got = (Verifier{CA: ca, Pinned: host}).Algorithms()
	if got[0] != gossh.CertAlgoED25519v01 || got[len(got)-1] != gossh.KeyAlgoED25519 || slices.Contains(got, gossh.KeyAlgoRSASHA256) {
		t.Errorf("both: %q", got)
	}
}

// TestSSHD checks a real sshd's host certificate (HostCertificate).
func TestSSHD(t *testing.T) {
	ca := newSigner(t)
	certified := testenv.SSHDWith(t, testenv.SSHDOptions{HostCA: ca}) // the certificate names 127.0.0.1
	plain := testenv.SSHD(t)
	dial := func(addr string, v Verifier) error {
		c, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
			User: "nobody", Auth: []gossh.AuthMethod{gossh.Password("x")},
			HostKeyCallback: v.Check, HostKeyAlgorithms: v.Algorithms(), Timeout: 10 * time.Second,
		})
		if c != nil {
			c.Close()
		}
		return err
	}
	// Past the host key check the login fails: that is as far as this goes.
	if err := dial(certified.Addr(), Verifier{CA: ca.PublicKey()}); err == nil || errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("certificate of the CA: %v", err)
	}
	for name, tc := range map[string]struct {
		addr string
		v    Verifier
	}{
		"other CA":                {certified.Addr(), Verifier{CA: newSigner(t).PublicKey()}},
		"reached as another name": {strings.Replace(certified.Addr(), "127.0.0.1", "localhost", 1), Verifier{CA: ca.PublicKey()}},
		"no certificate":          {plain.Addr(), Verifier{CA: ca.PublicKey()}},
	} {
		if err := dial(tc.addr, tc.v); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: %v, want a mismatch", name, err)
		}
	}
}

// FuzzParse feeds target options to Parse, and what it accepts to Check
// and Algorithms.
func FuzzParse(f *testing.F) {
	_, hostKey := testenv.NewSSHKey(f)
	_, caKey := testenv.NewSSHKey(f)
	f.Add(hostKey, "")
	f.Add("", caKey)
	f.Add(hostKey, caKey)
	f.Add("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "")
	f.Add(hostKey+"\n"+hostKey, "@cert-authority * "+caKey)
	presented := newSigner(f).PublicKey()
	f.Fuzz(func(t *testing.T, hk, hca string) {
		v, err := Parse(hk, hca)
		if err != nil {
			return
		}
		if v.Pinned == nil && v.CA == nil {
			t.Fatal("accepted neither key")
		}
		if len(v.Algorithms()) == 0 {
			t.Fatal("no algorithms")
		}
		if err := v.Check("h:22", nil, presented); err == nil && (v.Pinned == nil || !equal(v.Pinned, presented)) {
			t.Fatal("accepted a key it does not know")
		}
	})
}
