package barrier

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"

	"github.com/warderhq/warder/internal/errkind"
)

// Keys for Sign and MAC are derived from the root key by HKDF-SHA256 with
// info = label || purpose. The labels differ, so a signing key and a MAC
// key of the same purpose are unrelated; the purpose is the whole rest of
// info, so different purposes give unrelated keys. The root key does not
// change when data keys rotate, so neither do these.
const (
	signLabel     = "warder.barrier.sign.ed25519.v1\x00"
	macLabel      = "warder.barrier.mac.hmac-sha256.v1\x00"
	maxPurposeLen = 256
)

// derive returns a KeySize key for label and purpose. The caller zeroes it.
func (b *Barrier) derive(label, purpose string) ([]byte, error) {
	if purpose == "" || len(purpose) > maxPurposeLen {
		return nil, errkind.New(errkind.Invalid, "barrier: purpose must be 1 to %d bytes, not %d", maxPurposeLen, len(purpose))
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.root == nil {
		return nil, ErrSealed
	}
	k, err := hkdf.Key(sha256.New, b.root, nil, label+purpose, KeySize)
	if err != nil {
		return nil, errkind.New(errkind.Other, "barrier: derive key: %w", err)
	}
	return k, nil
}

// Sign signs msg with the Ed25519 key derived for purpose (for example
// "audit.checkpoint"). The key is the same for the life of the
// initialization. It fails with ErrSealed when sealed.
func (b *Barrier) Sign(ctx context.Context, purpose string, msg []byte) ([]byte, error) {
	seed, err := b.derive(signLabel, purpose)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	sig := ed25519.Sign(priv, msg)
	clear(priv)
	return sig, nil
}

// PublicKey returns the public half of the Ed25519 key Sign uses for
// purpose. It fails with ErrSealed when sealed.
func (b *Barrier) PublicKey(ctx context.Context, purpose string) (ed25519.PublicKey, error) {
	seed, err := b.derive(signLabel, purpose)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	pub := append(ed25519.PublicKey(nil), priv[ed25519.SeedSize:]...)
	clear(priv)
	return pub, nil
}

// MAC returns HMAC-SHA256 of msg under the key derived for purpose. Equal
// messages give equal MACs for one purpose and initialization, so MACs
// correlate secret values without revealing them. It fails with ErrSealed
// when sealed.
func (b *Barrier) MAC(ctx context.Context, purpose string, msg []byte) ([]byte, error) {
	key, err := b.derive(macLabel, purpose)
	if err != nil {
		return nil, err
	}
	h := hmac.New(sha256.New, key)
	clear(key)
	h.Write(msg)
	return h.Sum(nil), nil
}
