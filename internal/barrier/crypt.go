package barrier

import (
	"context"
	"crypto/rand"
	"encoding/binary"

	"github.com/warderhq/warder/internal/errkind"
)

// AAD binds a ciphertext to the record that stores it, so that a
// ciphertext copied to another row, another kind of record or another
// version of the same record does not decrypt there. Example:
// AAD{Kind: "vault.account", ID: "42", Version: 3}.
type AAD struct {
	Kind    string // what the record is, e.g. "vault.account"; required
	ID      string // which one
	Version int64  // which version of it, if records are versioned
}

// A ciphertext is
//
//	format (1 byte, formatV1) | key version (4 bytes, big-endian) | nonce (12 bytes) | AES-256-GCM box
//
// and the GCM additional data is, each field length-prefixed (see
// appendField) where its length varies:
//
//	field(recordAADLabel) | format | key version | field(Kind) | field(ID) | Version (8 bytes, big-endian)
const (
	formatV1       byte = 1
	headerSize          = 1 + 4
	nonceSize           = 12
	tagSize             = 16
	recordAADLabel      = "warder.barrier.record.v1"
)

// encode returns the GCM additional data binding a ciphertext of the given
// format and key version to a.
func (a AAD) encode(format byte, version uint32) []byte {
	buf := make([]byte, 0, 4+len(recordAADLabel)+1+4+4+len(a.Kind)+4+len(a.ID)+8)
	buf = appendField(buf, recordAADLabel)
	buf = append(buf, format)
	buf = binary.BigEndian.AppendUint32(buf, version)
	buf = appendField(buf, a.Kind)
	buf = appendField(buf, a.ID)
	return binary.BigEndian.AppendUint64(buf, uint64(a.Version))
}

// KeyVersion returns the data key version a ciphertext made by Encrypt is
// under, reading its header only. It needs no key.
func KeyVersion(ciphertext []byte) (uint32, error) {
	if len(ciphertext) < headerSize+nonceSize+tagSize {
		return 0, errkind.New(errkind.Invalid, "barrier: ciphertext is %d bytes, too short to be one", len(ciphertext))
	}
	if ciphertext[0] != formatV1 {
		return 0, errkind.New(errkind.Invalid, "barrier: ciphertext has unknown format %d", ciphertext[0])
	}
	v := binary.BigEndian.Uint32(ciphertext[1:headerSize])
	if v == 0 {
		return 0, errkind.New(errkind.Invalid, "barrier: ciphertext names key version 0, which never exists")
	}
	return v, nil
}

// Encrypt encrypts plaintext for the record aad names, under the current
// data key, with a fresh random nonce. The result says which key version
// it is under (see KeyVersion). It fails with ErrSealed when sealed.
func (b *Barrier) Encrypt(ctx context.Context, aad AAD, plaintext []byte) ([]byte, error) {
	if aad.Kind == "" {
		return nil, errkind.New(errkind.Invalid, "barrier: encrypt: AAD kind is empty")
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.root == nil {
		return nil, ErrSealed
	}
	v := b.current
	aead, err := newGCM(b.keys[v])
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerSize+nonceSize, headerSize+nonceSize+len(plaintext)+tagSize)
	out[0] = formatV1
	binary.BigEndian.PutUint32(out[1:], v)
	nonce := out[headerSize:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, errkind.New(errkind.Other, "barrier: read random nonce: %w", err)
	}
	return aead.Seal(out, nonce, plaintext, aad.encode(formatV1, v)), nil
}

// Decrypt decrypts a ciphertext made by Encrypt for the same AAD. A
// ciphertext altered in any byte, or made for another record, fails with
// ErrDecrypt and no plaintext. A key version the barrier does not hold makes
// it reload the keyring once, for a version another process has rotated to.
// It fails with ErrSealed when sealed.
func (b *Barrier) Decrypt(ctx context.Context, aad AAD, ciphertext []byte) ([]byte, error) {
	v, err := KeyVersion(ciphertext)
	if err != nil {
		return nil, err
	}
	if aad.Kind == "" {
		return nil, errkind.New(errkind.Invalid, "barrier: decrypt: AAD kind is empty")
	}
	pt, found, err := b.decryptWith(v, aad, ciphertext)
	if err != nil || found {
		return pt, err
	}
	if err := b.loadVersion(ctx, v); err != nil {
		return nil, err
	}
	pt, found, err = b.decryptWith(v, aad, ciphertext)
	if err != nil || found {
		return pt, err
	}
	return nil, errkind.New(errkind.Other, "barrier: ciphertext is under data key version %d, which this database does not hold", v)
}

// decryptWith decrypts with data key version v if the keyring holds it;
// found is false if it does not.
func (b *Barrier) decryptWith(v uint32, aad AAD, ciphertext []byte) (pt []byte, found bool, err error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.root == nil {
		return nil, false, ErrSealed
	}
	key, ok := b.keys[v]
	if !ok {
		return nil, false, nil
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, true, err
	}
	nonce := ciphertext[headerSize : headerSize+nonceSize]
	pt, err = aead.Open(nil, nonce, ciphertext[headerSize+nonceSize:], aad.encode(ciphertext[0], v))
	if err != nil {
		return nil, true, ErrDecrypt
	}
	return pt, true, nil
}
