package barrier

import (
	"context"
	"errors"
	"fmt"

	"github.com/warderhq/warder/internal/barrier/shamir"
	"github.com/warderhq/warder/internal/errkind"
)

// Unseal adds one share to the current unseal attempt and reports the
// resulting status.
//
// A share that is malformed, fails its checksum, comes from another
// initialization, or repeats one already submitted is refused with an
// errkind.Invalid error; the shares submitted before it are kept. When the
// threshold is met the shares are combined: if they rebuild the unseal key
// the barrier unseals, otherwise Unseal returns ErrWrongShares and the
// attempt starts over. On an unsealed barrier Unseal returns the status and
// no error; before Init it returns ErrNotInitialized.
func (b *Barrier) Unseal(ctx context.Context, share string) (Status, error) {
	b.unsealMu.Lock()
	defer b.unsealMu.Unlock()
	root, ok, err := b.readRoot(ctx)
	if err != nil {
		return Status{}, err
	}
	if !ok {
		return Status{Sealed: b.Sealed()}, ErrNotInitialized
	}
	if !b.Sealed() {
		return b.statusLocked(root), nil
	}
	if b.progress.setID != root.setID {
		b.progress.reset()
		b.progress.setID = root.setID
	}

	s, err := DecodeShare(share)
	if err == nil {
		err = b.checkShare(root, s)
		if err != nil {
			clear(s.Y)
		}
	}
	if err != nil {
		return b.statusLocked(root), err
	}
	b.progress.shares = append(b.progress.shares, s)
	if len(b.progress.shares) < root.threshold {
		b.log.InfoContext(ctx, "barrier: unseal share accepted", "progress", len(b.progress.shares), "threshold", root.threshold)
		return b.statusLocked(root), nil
	}

	key, err := b.combineLocked()
	if err != nil {
		b.progress.reset()
		return b.statusLocked(root), err
	}
	defer clear(key)
	switch err := b.unsealWith(ctx, root, key); {
	case errors.Is(err, errWrongUnsealKey):
		b.progress.reset()
		b.log.WarnContext(ctx, "barrier: unseal shares did not reconstruct the unseal key; progress reset")
		return b.statusLocked(root), ErrWrongShares
	case err != nil:
		// Not the shares' fault (the database failed): drop the last share
		// so that it can be submitted again, keep the others.
		last := len(b.progress.shares) - 1
		clear(b.progress.shares[last].Y)
		b.progress.shares = b.progress.shares[:last]
		return b.statusLocked(root), err
	}
	b.progress.reset()
	b.log.InfoContext(ctx, "barrier: unsealed with shares", "set_id", root.setID.String())
	return b.statusLocked(root), nil
}

// checkShare checks that s may join the current attempt. b.unsealMu is held.
func (b *Barrier) checkShare(root rootRow, s Share) error {
	if s.SetID != root.setID {
		return errkind.New(errkind.Invalid,
			"barrier: share is from another initialization (set %s); this server's shares are of set %s", s.SetID, root.setID)
	}
	if root.threshold == 1 {
		if s.X != 0 {
			return errkind.New(errkind.Invalid, "barrier: share is numbered %d, but this server was initialized with a single share", s.X)
		}
		return nil
	}
	if s.X == 0 || int(s.X) > root.shares {
		return errkind.New(errkind.Invalid, "barrier: share is numbered %d, but this server has shares 1 to %d", s.X, root.shares)
	}
	for _, p := range b.progress.shares {
		if p.X == s.X {
			return errkind.New(errkind.Invalid, "barrier: share number %d was already submitted in this unseal attempt", s.X)
		}
	}
	return nil
}

// combineLocked rebuilds the unseal key from the submitted shares.
// b.unsealMu is held.
func (b *Barrier) combineLocked() ([]byte, error) {
	if len(b.progress.shares) == 1 && b.progress.shares[0].X == 0 {
		return append([]byte(nil), b.progress.shares[0].Y...), nil
	}
	raw := make([][]byte, len(b.progress.shares))
	for i, s := range b.progress.shares {
		raw[i] = append(append(make([]byte, 0, KeySize+1), s.Y...), s.X)
	}
	defer func() {
		for _, r := range raw {
			clear(r)
		}
	}()
	key, err := shamir.Combine(raw)
	if err != nil {
		return nil, errkind.Wrap(errkind.Invalid, fmt.Errorf("barrier: combine shares: %w", err))
	}
	return key, nil
}

// UnsealWithKeyFile unseals the barrier with the contents of an unseal key
// file. A malformed or damaged file, a key file of another initialization,
// or one whose key does not decrypt the root key is refused with an
// errkind.Invalid error, and the barrier stays sealed. It writes nothing to
// the database. On an unsealed barrier it does nothing.
func (b *Barrier) UnsealWithKeyFile(ctx context.Context, keyFile []byte) error {
	b.unsealMu.Lock()
	defer b.unsealMu.Unlock()
	root, ok, err := b.readRoot(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotInitialized
	}
	if !b.Sealed() {
		return nil
	}
	kf, err := DecodeKeyFile(keyFile)
	if err != nil {
		return err
	}
	defer clear(kf.Key)
	if kf.SetID != root.setID {
		return errkind.New(errkind.Invalid,
			"barrier: key file is from another initialization (set %s); this server's set is %s", kf.SetID, root.setID)
	}
	if err := b.unsealWith(ctx, root, kf.Key); err != nil {
		if errors.Is(err, errWrongUnsealKey) {
			return ErrWrongKeyFile
		}
		return err
	}
	b.progress.reset()
	b.log.InfoContext(ctx, "barrier: unsealed with key file", "set_id", root.setID.String())
	return nil
}

// errWrongUnsealKey means a candidate unseal key does not open the root key.
var errWrongUnsealKey = errors.New("barrier: wrong unseal key")

// unsealWith decrypts the root key with unsealKey, loads the keyring and
// makes the barrier unsealed. It returns errWrongUnsealKey if unsealKey is
// not the unseal key. b.unsealMu is held.
func (b *Barrier) unsealWith(ctx context.Context, root rootRow, unsealKey []byte) error {
	rootKey, err := openBox(unsealKey, root.rootCT, rootAAD(root.setID))
	if err != nil {
		return errWrongUnsealKey
	}
	if len(rootKey) != KeySize {
		clear(rootKey)
		return fmt.Errorf("barrier: stored root key is %d bytes, want %d", len(rootKey), KeySize)
	}
	rows, err := b.readKeyRows(ctx)
	if err != nil {
		clear(rootKey)
		return err
	}
	keys, current, err := openKeyRows(rootKey, root.setID, rows, nil)
	if err != nil {
		clear(rootKey)
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.zeroLocked()
	b.root, b.setID, b.keys, b.current = rootKey, root.setID, keys, current
	return nil
}

// ResetUnseal forgets the shares submitted so far.
func (b *Barrier) ResetUnseal() {
	b.unsealMu.Lock()
	defer b.unsealMu.Unlock()
	b.progress.reset()
}

// Seal forgets all key material, zeroing the bytes the barrier holds, and
// resets unseal progress. Operations in flight finish first; every later
// one fails with ErrSealed until the barrier is unsealed again.
//
// Go cannot promise more: copies the runtime made, such as the AES key
// schedules of finished calls, are unreachable garbage and are not zeroed.
func (b *Barrier) Seal() {
	b.unsealMu.Lock()
	defer b.unsealMu.Unlock()
	b.progress.reset()
	b.mu.Lock()
	wasUnsealed := b.root != nil
	b.zeroLocked()
	b.mu.Unlock()
	if wasUnsealed {
		b.log.Info("barrier: sealed")
	}
}

// zeroLocked zeroes and drops every key. b.mu is held for writing.
func (b *Barrier) zeroLocked() {
	clear(b.root)
	for _, k := range b.keys {
		clear(k)
	}
	b.root, b.keys, b.current, b.setID = nil, nil, 0, SetID{}
}
