package barrier

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestAADBinding(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx := context.Background()
		b, _ := unsealed(t, open(t))
		aad := AAD{Kind: "vault.account", ID: "42", Version: 3}
		secret := []byte("correct horse battery staple")
		ct, err := b.Encrypt(ctx, aad, secret)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(ct, secret) {
			t.Fatal("ciphertext contains the plaintext")
		}
		if pt, err := b.Decrypt(ctx, aad, ct); err != nil || !bytes.Equal(pt, secret) {
			t.Fatalf("Decrypt with the right AAD = %q, %v", pt, err)
		}
		others := map[string]AAD{
			"other id":      {Kind: "vault.account", ID: "43", Version: 3},
			"other kind":    {Kind: "vault.credential", ID: "42", Version: 3},
			"other version": {Kind: "vault.account", ID: "42", Version: 4},
			// Without length prefixes these two would encode alike.
			"shifted boundary": {Kind: "vault.account4", ID: "2", Version: 3},
			"negative version": {Kind: "vault.account", ID: "42", Version: -3},
			"empty id":         {Kind: "vault.account", Version: 3},
		}
		for name, other := range others {
			t.Run(name, func(t *testing.T) {
				pt, err := b.Decrypt(ctx, other, ct)
				if !errors.Is(err, ErrDecrypt) || pt != nil {
					t.Fatalf("Decrypt under %+v = %q, %v; want ErrDecrypt and no plaintext", other, pt, err)
				}
				if strings.Contains(err.Error(), "42") || strings.Contains(err.Error(), "horse") {
					t.Fatalf("error names record or secret: %v", err)
				}
			})
		}
	})
}

func TestAADEncodingUnambiguous(t *testing.T) {
	pairs := [][2]AAD{
		{{Kind: "ab", ID: "c"}, {Kind: "a", ID: "bc"}},
		{{Kind: "a", ID: ""}, {Kind: "a\x00\x00\x00\x00", ID: ""}},
		{{Kind: "k", Version: 1}, {Kind: "k", Version: 256}},
	}
	for _, p := range pairs {
		if bytes.Equal(p[0].encode(formatV1, 1), p[1].encode(formatV1, 1)) {
			t.Errorf("%+v and %+v encode alike", p[0], p[1])
		}
	}
	a := AAD{Kind: "k", ID: "1"}
	if bytes.Equal(a.encode(formatV1, 1), a.encode(formatV1, 2)) || bytes.Equal(a.encode(1, 1), a.encode(2, 1)) {
		t.Error("key version or format is not part of the AAD")
	}
}

func TestTamper(t *testing.T) {
	ctx := context.Background()
	b, _ := unsealed(t, testenv.SQLite(t))
	aad := AAD{Kind: "k", ID: "1"}
	ct, err := b.Encrypt(ctx, aad, bytes.Repeat([]byte("p"), 40))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		pt, err := b.Decrypt(ctx, aad, bad)
		if err == nil || pt != nil {
			t.Fatalf("Decrypt with byte %d changed succeeded", i)
		}
	}
	for _, n := range []int{0, 1, 4, 5, 16, 32, len(ct) - 1} {
		if _, err := b.Decrypt(ctx, aad, ct[:n]); err == nil {
			t.Fatalf("Decrypt of the first %d bytes succeeded", n)
		}
	}
	if _, err := b.Decrypt(ctx, aad, append(bytes.Clone(ct), 0)); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Decrypt with a byte appended: err = %v, want ErrDecrypt", err)
	}
}

func TestEncryptFreshNonces(t *testing.T) {
	ctx := context.Background()
	b, _ := unsealed(t, testenv.SQLite(t))
	aad := AAD{Kind: "k", ID: "1"}
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		ct, err := b.Encrypt(ctx, aad, []byte("same"))
		if err != nil {
			t.Fatal(err)
		}
		nonce := string(ct[headerSize : headerSize+nonceSize])
		if seen[nonce] {
			t.Fatalf("nonce repeated after %d calls", i)
		}
		seen[nonce] = true
	}
}

func TestEncryptEmptyKind(t *testing.T) {
	ctx := context.Background()
	b, _ := unsealed(t, testenv.SQLite(t))
	if _, err := b.Encrypt(ctx, AAD{ID: "1"}, []byte("x")); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("Encrypt with empty kind: err = %v, want Invalid", err)
	}
	ct, _ := b.Encrypt(ctx, AAD{Kind: "k"}, nil)
	if pt, err := b.Decrypt(ctx, AAD{Kind: "k"}, ct); err != nil || len(pt) != 0 {
		t.Fatalf("round trip of empty plaintext = %q, %v", pt, err)
	}
}

func TestKeyVersion(t *testing.T) {
	ctx := context.Background()
	b, _ := unsealed(t, testenv.SQLite(t))
	ct, _ := b.Encrypt(ctx, AAD{Kind: "k"}, []byte("x"))
	if v, err := KeyVersion(ct); err != nil || v != 1 {
		t.Fatalf("KeyVersion = %d, %v; want 1", v, err)
	}
	bad := map[string][]byte{
		"nil":            nil,
		"short":          ct[:headerSize+nonceSize+tagSize-1],
		"unknown format": append([]byte{2}, ct[1:]...),
		"version 0":      append([]byte{1, 0, 0, 0, 0}, ct[5:]...),
	}
	for name, c := range bad {
		if _, err := KeyVersion(c); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("KeyVersion(%s): err = %v, want Invalid", name, err)
		}
	}
	// A version no database holds: reload, then a clear error.
	unknown := bytes.Clone(ct)
	unknown[4] = 9
	if _, err := b.Decrypt(ctx, AAD{Kind: "k"}, unknown); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Fatalf("Decrypt under unknown version: err = %v", err)
	}
}

func TestDerivedKeys(t *testing.T) {
	ctx := context.Background()
	b, res := unsealed(t, testenv.SQLite(t))
	msg := []byte("checkpoint 17")

	sig, err := b.Sign(ctx, "audit.checkpoint", msg)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.PublicKey(ctx, "audit.checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		t.Fatal("signature does not verify under PublicKey")
	}
	if ed25519.Verify(pub, []byte("checkpoint 18"), sig) {
		t.Fatal("signature verifies for another message")
	}
	other, _ := b.PublicKey(ctx, "audit.other")
	if bytes.Equal(pub, other) || ed25519.Verify(other, msg, sig) {
		t.Fatal("different purposes give the same signing key")
	}

	m1, _ := b.MAC(ctx, "audit.secret", []byte("v"))
	m2, _ := b.MAC(ctx, "audit.secret", []byte("v"))
	m3, _ := b.MAC(ctx, "audit.other", []byte("v"))
	m4, _ := b.MAC(ctx, "audit.secret", []byte("w"))
	if !bytes.Equal(m1, m2) || len(m1) != 32 {
		t.Fatal("MAC not deterministic per purpose")
	}
	if bytes.Equal(m1, m3) || bytes.Equal(m1, m4) {
		t.Fatal("MAC same across purposes or messages")
	}
	if _, err := b.MAC(ctx, "", msg); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("MAC with empty purpose: err = %v, want Invalid", err)
	}
	if _, err := b.Sign(ctx, strings.Repeat("p", 300), msg); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("Sign with long purpose: err = %v, want Invalid", err)
	}

	// Stable across seal/unseal and data-key rotation; different per initialization.
	if _, err := b.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	b.Seal()
	if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
		t.Fatal(err)
	}
	pub2, _ := b.PublicKey(ctx, "audit.checkpoint")
	m5, _ := b.MAC(ctx, "audit.secret", []byte("v"))
	if !bytes.Equal(pub, pub2) || !bytes.Equal(m1, m5) {
		t.Fatal("derived keys changed across seal and rotation")
	}
	b2, _ := unsealed(t, testenv.SQLite(t))
	pub3, _ := b2.PublicKey(ctx, "audit.checkpoint")
	if bytes.Equal(pub, pub3) {
		t.Fatal("two initializations derive the same key")
	}
}

func benchBarrier(b *testing.B) (*Barrier, []byte, AAD) {
	bar, _ := unsealed(b, testenv.SQLite(b))
	return bar, bytes.Repeat([]byte("x"), 1024), AAD{Kind: "bench", ID: "1", Version: 1}
}

func BenchmarkEncrypt(b *testing.B) {
	bar, pt, aad := benchBarrier(b)
	ctx := context.Background()
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := bar.Encrypt(ctx, aad, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	bar, pt, aad := benchBarrier(b)
	ctx := context.Background()
	ct, err := bar.Encrypt(ctx, aad, pt)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := bar.Decrypt(ctx, aad, ct); err != nil {
			b.Fatal(err)
		}
	}
}
