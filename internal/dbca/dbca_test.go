package dbca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// unsealed returns an initialised, unsealed barrier on db and its unseal
// key, so that a second barrier on db can act as another process.
func unsealed(t *testing.T, db *store.DB) (*barrier.Barrier, []byte) {
	t.Helper()
	ctx := context.Background()
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
		t.Fatal(err)
	}
	return b, res.UnsealKey
}

func TestCADeterministic(t *testing.T) {
	ctx := context.Background()
	db := testenv.SQLite(t)
	b, key := unsealed(t, db)
	a1, err := New(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	// Another process on the same database derives the same certificate.
	b2, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, b2); !errors.Is(err, barrier.ErrSealed) {
		t.Errorf("New while sealed: %v, want ErrSealed", err)
	}
	if err := b2.UnsealWithKeyFile(ctx, key); err != nil {
		t.Fatal(err)
	}
	a2, err := New(ctx, b2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a1.Certificate().Raw, a2.Certificate().Raw) || !bytes.Equal(a1.PEM(), a2.PEM()) {
		t.Error("two processes derived different CA certificates")
	}
	ca := a1.Certificate()
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.PublicKeyAlgorithm != x509.Ed25519 {
		t.Errorf("CA certificate: IsCA %v, MaxPathLen %d, algorithm %v", ca.IsCA, ca.MaxPathLen, ca.PublicKeyAlgorithm)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA self-signature: %v", err)
	}
	// Another initialization has another CA.
	other, _ := unsealed(t, testenv.SQLite(t))
	a3, err := New(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a3.Certificate().Raw, ca.Raw) {
		t.Error("two initializations share a CA")
	}
}

func TestIssue(t *testing.T) {
	ctx := context.Background()
	b, _ := unsealed(t, testenv.SQLite(t))
	a, err := New(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub, err := ParsePublicKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	if err != nil {
		t.Fatalf("ParsePublicKey: %v", err)
	}
	now := time.Now()
	cert, err := a.Issue(ClientCert{PublicKey: pub, User: "alice", TokenID: "0123456789abcdef01", Now: now, NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate verifies for server authentication")
	}
	if !cert.NotAfter.Equal(now.Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("NotAfter %v, want the token's expiry %v", cert.NotAfter, now.Add(time.Hour))
	}
	user, tok, err := Identify(cert)
	if err != nil || user != "alice" || tok != "0123456789abcdef01" {
		t.Errorf("Identify = %q, %q, %v", user, tok, err)
	}
	// Capped at MaxClientCertTTL.
	long, err := a.Issue(ClientCert{PublicKey: pub, User: "alice", TokenID: "ab", Now: now, NotAfter: now.Add(30 * 24 * time.Hour)})
	if err != nil || long.NotAfter.After(now.Add(MaxClientCertTTL)) {
		t.Errorf("long certificate: NotAfter %v, %v; want at most %v", long.NotAfter, err, now.Add(MaxClientCertTTL))
	}
	for name, req := range map[string]ClientCert{
		"no user":   {PublicKey: pub, TokenID: "ab", Now: now},
		"no token":  {PublicKey: pub, User: "alice", Now: now},
		"expired":   {PublicKey: pub, User: "alice", TokenID: "ab", Now: now, NotAfter: now.Add(-time.Second)},
		"bad token": {PublicKey: pub, User: "alice", TokenID: "a/b", Now: now},
	} {
		if _, err := a.Issue(req); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

func TestInvalidKeys(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	pemOf := func(k any) string {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := pemOf(&p256.PublicKey)
	for name, s := range map[string]string{
		"P-384":          pemOf(&p384.PublicKey),
		"Ed25519":        pemOf(edPub),
		"garbage":        "not a key",
		"wrong type":     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})),
		"trailing block": good + good,
	} {
		if _, err := ParsePublicKey(s); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: err = %v, want ErrInvalidKey", name, err)
		}
	}
	b, _ := unsealed(t, testenv.SQLite(t))
	a, err := New(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Issue(ClientCert{PublicKey: &p384.PublicKey, User: "alice", TokenID: "ab", Now: time.Now()}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Issue(P-384) = %v, want ErrInvalidKey", err)
	}
}

func TestIdentifyForeign(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	if _, _, err := Identify(cert); !errors.Is(err, ErrNotClientCert) {
		t.Errorf("Identify(foreign) = %v, want ErrNotClientCert", err)
	}
}

// FuzzParsePublicKey: whatever a caller sends as public_key, the parser
// returns a P-256 key or ErrInvalidKey, and never panics.
func FuzzParsePublicKey(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	f.Add("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	f.Add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("error %v is not ErrInvalidKey", err)
			}
			return
		}
		if k.Curve != elliptic.P256() {
			t.Fatalf("accepted a key on %v", k.Curve.Params().Name)
		}
	})
}
