package barrier

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Rewrapper moves the records of one table to the current data key.
// Every package that stores ciphertext registers one.
type Rewrapper interface {
	// Rewrap re-encrypts every record of one table whose ciphertext is
	// under a key version older than b's current one, using b.Rewrap, and
	// reports how many it changed.
	Rewrap(ctx context.Context, b *Barrier) (int, error)
}

// Register adds r under name, replacing any earlier one of that name. Call
// it while wiring the server, before Run.
func (b *Barrier) Register(name string, r Rewrapper) {
	b.regMu.Lock()
	defer b.regMu.Unlock()
	b.rewrappers[name] = r
}

// Rewrap decrypts ciphertext and encrypts it again under the current data
// key if it is under an older one; changed reports whether it did. A
// ciphertext already under the current version (or a newer one, rotated by
// another process) is returned as it is.
func (b *Barrier) Rewrap(ctx context.Context, aad AAD, ciphertext []byte) (newCiphertext []byte, changed bool, err error) {
	v, err := KeyVersion(ciphertext)
	if err != nil {
		return nil, false, err
	}
	b.mu.RLock()
	sealed, current := b.root == nil, b.current
	b.mu.RUnlock()
	if sealed {
		return nil, false, ErrSealed
	}
	if v >= current {
		return ciphertext, false, nil
	}
	pt, err := b.Decrypt(ctx, aad, ciphertext)
	if err != nil {
		return nil, false, err
	}
	defer clear(pt)
	out, err := b.Encrypt(ctx, aad, pt)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// RewrapAll runs every registered Rewrapper, in order of name, and returns
// the number of records they changed. A failing Rewrapper does not stop
// the others; their errors are joined. It stops early when sealed.
func (b *Barrier) RewrapAll(ctx context.Context) (int, error) {
	b.regMu.Lock()
	names := make([]string, 0, len(b.rewrappers))
	for n := range b.rewrappers {
		names = append(names, n)
	}
	rs := make(map[string]Rewrapper, len(b.rewrappers))
	for n, r := range b.rewrappers {
		rs[n] = r
	}
	b.regMu.Unlock()
	sort.Strings(names)

	total := 0
	var errs []error
	for _, name := range names {
		if b.Sealed() {
			errs = append(errs, ErrSealed)
			break
		}
		n, err := rs[name].Rewrap(ctx, b)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("barrier: rewrap %s: %w", name, err))
		}
	}
	return total, errors.Join(errs...)
}

// Run reloads the keyring and rewraps records every RewrapInterval, and
// soon after each Rotate, while the barrier is unsealed. It returns when
// ctx is done. Errors are logged (never key material) and retried at the
// next tick. Call it once, in its own goroutine.
func (b *Barrier) Run(ctx context.Context) {
	t := time.NewTicker(b.rewrapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.rewrapNow:
		}
		b.runOnce(ctx)
	}
}

// runOnce is one round of Run.
func (b *Barrier) runOnce(ctx context.Context) {
	if b.Sealed() {
		return
	}
	if err := b.reloadKeyring(ctx); err != nil {
		if !errors.Is(err, ErrSealed) && ctx.Err() == nil {
			b.log.ErrorContext(ctx, "barrier: reload keyring", "err", err)
		}
		return
	}
	n, err := b.RewrapAll(ctx)
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrSealed) {
		b.log.ErrorContext(ctx, "barrier: rewrap", "err", err, "rewrapped", n)
	} else if n > 0 {
		b.log.InfoContext(ctx, "barrier: rewrapped records to the current data key", "rewrapped", n)
	}
}
