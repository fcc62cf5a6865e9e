package barrier

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Stored keys are sealed as nonce || AES-256-GCM box, with AAD naming what
// the key is and which initialization it belongs to, so that a key row
// copied to another version or another database does not open.
const (
	rootAADLabel    = "warder.barrier.root-key.v1"
	dataKeyAADLabel = "warder.barrier.data-key.v1"
)

func rootAAD(setID SetID) []byte {
	return append(appendField(nil, rootAADLabel), setID[:]...)
}

func dataKeyAAD(setID SetID, version uint32) []byte {
	aad := append(appendField(nil, dataKeyAADLabel), setID[:]...)
	return binary.BigEndian.AppendUint32(aad, version)
}

// newGCM returns AES-256-GCM under key.
func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("barrier: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("barrier: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("barrier: %w", err)
	}
	return aead, nil
}

// sealBox encrypts plaintext under key with a fresh random nonce and
// returns nonce || box.
func sealBox(key, plaintext, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("barrier: read random nonce: %w", err)
	}
	return aead.Seal(out, out, plaintext, aad), nil
}

// openBox reverses sealBox. Its error says only that the box did not open.
func openBox(key, box, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(box) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("barrier: sealed key is too short")
	}
	return aead.Open(nil, box[:aead.NonceSize()], box[aead.NonceSize():], aad)
}

// keyRow is a stored barrier_keys row.
type keyRow struct {
	version uint32
	ct      []byte
}

// readKeyRows reads every stored data key.
func (b *Barrier) readKeyRows(ctx context.Context) ([]keyRow, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT version, key_ct FROM barrier_keys ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("barrier: read keyring: %w", err)
	}
	defer rows.Close()
	var out []keyRow
	for rows.Next() {
		var v int64
		var ct []byte
		if err := rows.Scan(&v, &ct); err != nil {
			return nil, fmt.Errorf("barrier: read keyring: %w", err)
		}
		if v < 1 || v > math.MaxUint32 {
			return nil, fmt.Errorf("barrier: keyring holds out-of-range version %d", v)
		}
		out = append(out, keyRow{uint32(v), ct})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("barrier: read keyring: %w", err)
	}
	return out, nil
}

// openKeyRows decrypts the rows whose versions are not in have, returning a
// new map with have's keys and the new ones, and the highest version. On
// error it zeroes what it decrypted and leaves have alone.
func openKeyRows(rootKey []byte, setID SetID, rows []keyRow, have map[uint32][]byte) (map[uint32][]byte, uint32, error) {
	keys := make(map[uint32][]byte, len(rows))
	var fresh [][]byte
	var current uint32
	for _, r := range rows {
		current = max(current, r.version)
		if k, ok := have[r.version]; ok {
			keys[r.version] = k
			continue
		}
		k, err := openBox(rootKey, r.ct, dataKeyAAD(setID, r.version))
		if err == nil && len(k) != KeySize {
			clear(k)
			err = fmt.Errorf("wrong length")
		}
		if err != nil {
			for _, f := range fresh {
				clear(f)
			}
			return nil, 0, fmt.Errorf("barrier: data key version %d does not decrypt under the root key: the keyring is damaged or from another initialization", r.version)
		}
		keys[r.version] = k
		fresh = append(fresh, k)
	}
	for v, k := range have {
		if _, ok := keys[v]; !ok {
			keys[v] = k // not expected: stored versions are never deleted
		}
	}
	if current == 0 {
		return nil, 0, fmt.Errorf("barrier: keyring is empty")
	}
	return keys, current, nil
}

// reloadKeyring reads the stored data keys and adds those the barrier does
// not hold yet, so that versions rotated by another process decrypt and the
// newest one encrypts.
func (b *Barrier) reloadKeyring(ctx context.Context) error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	return b.reloadKeyringLocked(ctx)
}

// reloadKeyringLocked is reloadKeyring with b.reloadMu held.
func (b *Barrier) reloadKeyringLocked(ctx context.Context) error {
	if b.Sealed() {
		return ErrSealed
	}
	rows, err := b.readKeyRows(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.root == nil {
		return ErrSealed
	}
	keys, current, err := openKeyRows(b.root, b.setID, rows, b.keys)
	if err != nil {
		return err
	}
	if current > b.current {
		b.log.Info("barrier: learned new data key version", "key_version", current)
	}
	b.keys, b.current = keys, max(current, b.current)
	return nil
}

// haveVersion reports whether the keyring holds version v.
func (b *Barrier) haveVersion(v uint32) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.keys[v]
	return ok
}

// loadVersion reloads the keyring unless version v is already in it (maybe
// loaded by a concurrent call while this one waited).
func (b *Barrier) loadVersion(ctx context.Context, v uint32) error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	if b.haveVersion(v) {
		return nil
	}
	return b.reloadKeyringLocked(ctx)
}

// Rotate adds a data key version, used for all new writes from now on by
// this process (and by others once they reload their keyring). Old versions
// keep decrypting. It wakes Run to rewrap records without waiting for it.
// Concurrent rotations, in one process or several sharing a PostgreSQL
// database, each get a distinct version.
func (b *Barrier) Rotate(ctx context.Context) (uint32, error) {
	if b.Sealed() {
		return 0, ErrSealed
	}
	dataKey := make([]byte, KeySize)
	if _, err := rand.Read(dataKey); err != nil {
		return 0, fmt.Errorf("barrier: read random key: %w", err)
	}
	var version uint32
	err := b.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := b.db.Lock(ctx, tx, "barrier.keyring"); err != nil {
			return err
		}
		var last int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM barrier_keys`).Scan(&last); err != nil {
			return fmt.Errorf("barrier: read keyring: %w", err)
		}
		if last >= math.MaxUint32 {
			return errkind.New(errkind.Conflict, "barrier: all data key versions are used")
		}
		version = uint32(last + 1)
		b.mu.RLock()
		if b.root == nil {
			b.mu.RUnlock()
			return ErrSealed
		}
		ct, err := sealBox(b.root, dataKey, dataKeyAAD(b.setID, version))
		b.mu.RUnlock()
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO barrier_keys (version, key_ct, created_at) VALUES ($1, $2, $3)`,
			int64(version), ct, store.Micros(b.now())); err != nil {
			if store.IsUniqueViolation(err) {
				return errkind.New(errkind.Conflict, "barrier: data key version %d was added concurrently; retry", version)
			}
			return fmt.Errorf("barrier: store data key: %w", err)
		}
		return nil
	})
	if err != nil {
		clear(dataKey)
		return 0, err
	}

	b.mu.Lock()
	if b.root == nil { // sealed meanwhile: the key is stored, just not held
		clear(dataKey)
	} else {
		if old, ok := b.keys[version]; ok {
			clear(old)
		}
		b.keys[version] = dataKey
		b.current = max(b.current, version)
	}
	b.mu.Unlock()
	b.log.InfoContext(ctx, "barrier: rotated data key", "key_version", version)
	select {
	case b.rewrapNow <- struct{}{}:
	default:
	}
	return version, nil
}
