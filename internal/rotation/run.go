package rotation

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
)

// system is the origin of rotations the engine starts by itself.
var system = audit.Origin{Actor: "system:rotation"}

// Recover settles the account's pending version, if any (see the package
// doc). It returns ErrBusy when another rotation holds the account.
func (e *Engine) Recover(ctx context.Context, o audit.Origin, id string) (Result, error) {
	j, err := e.load(ctx, o, id)
	if err != nil {
		return Result{Account: id}, err
	}
	unclaim, err := e.claim(ctx, id, false)
	if err != nil {
		return Result{Account: id}, err
	}
	defer unclaim()
	return e.settle(ctx, j)
}

// RecoverAll settles every pending version no live rotation holds: at
// start, and periodically for claims abandoned by crashed processes.
func (e *Engine) RecoverAll(ctx context.Context) ([]Result, error) {
	accts, err := e.vault.AccountsWithPending(ctx)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, a := range accts {
		res, err := e.Recover(ctx, system, a.ID)
		if errors.Is(err, ErrBusy) {
			continue
		}
		if err != nil {
			e.logger.Warn("recover pending rotation", "account", a.ID, "outcome", res.Outcome, "err", err)
		}
		out = append(out, res)
	}
	return out, nil
}

// Verify logs in with the account's current credential (the heartbeat).
// A refused credential means it was changed outside Warder: the account is
// marked out_of_sync and an audit event raised. An unreachable target
// changes nothing and returns the error. While a rotation of the account
// is in progress it waits for it to finish (Config.BusyWait), then
// verifies the credential that rotation left.
func (e *Engine) Verify(ctx context.Context, o audit.Origin, id string) (bool, error) {
	return e.verify(ctx, o, id, true)
}

// verify is Verify; without wait it fails with ErrBusy at once when a
// rotation holds the account.
func (e *Engine) verify(ctx context.Context, o audit.Origin, id string, wait bool) (bool, error) {
	j, err := e.load(ctx, o, id)
	if err != nil {
		return false, err
	}
	unclaim, err := e.claim(ctx, id, wait) // a rotation in flight would look like drift
	if err != nil {
		return false, err
	}
	defer unclaim()
	cur, err := e.current(ctx, id)
	if err != nil {
		return false, err
	}
	if cur == nil {
		return false, errkind.New(errkind.Conflict, "rotation: %s has no credential to verify", id)
	}
	verr := j.conn.Verify(ctx, j.ct, j.acct.Username, *cur)
	clear(cur.Secret)
	switch {
	case verr == nil:
		if err := e.vault.MarkVerified(ctx, id, true, e.now()); err != nil {
			return true, err
		}
		if j.acct.Status != "ok" {
			if err := e.vault.SetStatus(ctx, o, id, "ok", "the stored credential logs in"); err != nil {
				return true, err
			}
		}
		return true, nil
	case isRejected(verr):
		if err := e.vault.MarkVerified(ctx, id, false, e.now()); err != nil {
			return false, err
		}
		e.logger.Error("credential drift: the stored credential is refused", "account", id)
		if err := e.vault.SetStatus(ctx, o, id, "out_of_sync", "drift: the target refuses the stored credential; was it changed outside Warder?"); err != nil {
			return false, err
		}
		return false, nil
	}
	return false, verr
}

// RotateTarget rotates every account of a target, in parallel within the
// target's concurrency limit. The target's management account goes last:
// the others are changed through it, and a change made with a password it
// has just lost would be refused.
func (e *Engine) RotateTarget(ctx context.Context, o audit.Origin, target string) ([]Result, error) {
	tgt, err := e.vault.Target(ctx, target)
	if err != nil {
		return nil, err
	}
	accts, err := e.vault.Accounts(ctx, target)
	if err != nil {
		return nil, err
	}
	results := make([]Result, len(accts))
	errs := make([]error, len(accts))
	mgmt := -1
	var wg sync.WaitGroup
	for i, a := range accts {
		if a.Username == tgt.ManagementAccount {
			mgmt = i
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.Rotate(ctx, o, a.ID)
			if errs[i] != nil {
				results[i].Account = a.ID
				results[i].Error = publicMessage(errs[i])
			}
		}()
	}
	wg.Wait()
	if mgmt >= 0 {
		results[mgmt], errs[mgmt] = e.Rotate(ctx, o, accts[mgmt].ID)
	}
	return results, errors.Join(errs...)
}

// Trigger rotates an account in the background, once however often it is
// triggered before the rotation starts. The vault calls it when a lease
// ends on an account that rotates on check-in.
func (e *Engine) Trigger(ctx context.Context, id, reason string) {
	e.mu.Lock()
	if e.queued[id] {
		e.mu.Unlock()
		return
	}
	e.queued[id] = true
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx := context.WithoutCancel(ctx)
		for attempt := 0; ; attempt++ {
			// Never rotate under a holder's feet: an account still checked
			// out (max_checkouts > 1) waits for its last lease to end; the
			// scheduler picks it up then (the vault marks it due).
			if busy, err := e.leased(ctx, id); err != nil || busy {
				if err != nil {
					e.logger.Warn("triggered rotation: list leases", "account", id, "err", err)
				}
				break
			}
			res, err := e.rotateAccount(ctx, system, id, false)
			if errors.Is(err, ErrBusy) && attempt < 30 {
				// Another rotation holds the account. It may have started
				// before the check-in, so ours must still run: retry.
				time.Sleep(time.Second)
				continue
			}
			if err != nil {
				e.logger.Warn("triggered rotation failed", "account", id, "reason", reason, "outcome", res.Outcome, "err", err)
			}
			break
		}
		e.mu.Lock()
		delete(e.queued, id)
		e.mu.Unlock()
	}()
}

// leased reports whether the account has an active lease.
func (e *Engine) leased(ctx context.Context, id string) (bool, error) {
	ll, err := e.vault.Leases(ctx, id)
	if err != nil {
		return false, err
	}
	return len(ll.Leases) > 0, nil
}

// Run recovers pending rotations at start, then until ctx ends rotates
// accounts whose schedule is due, retries unsettled recoveries, and
// verifies every credential each VerifyInterval. It waits for the
// rotations it started before returning.
func (e *Engine) Run(ctx context.Context) {
	defer e.wg.Wait()
	// Claims a crashed predecessor held would make RecoverAll skip its
	// interrupted rotations until they expire (ClaimTTL).
	if n, err := e.vault.ReleaseAbandonedClaims(ctx, e.owner+"#"); err != nil {
		e.logger.Warn("release abandoned rotation claims", "err", err)
	} else if n > 0 {
		e.logger.Info("released rotation claims of a process that died", "count", n)
	}
	if _, err := e.RecoverAll(ctx); err != nil {
		e.logger.Warn("recover pending rotations", "err", err)
	}
	tick := time.NewTicker(e.cfg.ScheduleInterval)
	defer tick.Stop()
	var verify <-chan time.Time
	if e.cfg.VerifyInterval > 0 {
		vt := time.NewTicker(e.cfg.VerifyInterval)
		defer vt.Stop()
		verify = vt.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := e.RecoverAll(ctx); err != nil {
				e.logger.Warn("recover pending rotations", "err", err)
			}
			due, err := e.vault.AccountsDue(ctx, e.now())
			if err != nil {
				e.logger.Warn("list accounts due for rotation", "err", err)
				continue
			}
			for _, a := range due {
				e.Trigger(ctx, a.ID, "schedule")
			}
		case <-verify:
			e.verifyAll(ctx)
		}
	}
}

func (e *Engine) verifyAll(ctx context.Context) {
	accts, err := e.vault.Accounts(ctx, "")
	if err != nil {
		e.logger.Warn("list accounts to verify", "err", err)
		return
	}
	for _, a := range accts {
		if ctx.Err() != nil {
			return
		}
		if _, err := e.verify(ctx, system, a.ID, false); err != nil && !errors.Is(err, ErrBusy) {
			e.logger.Warn("verify credential", "account", a.ID, "err", err)
		}
	}
}

// publicMessage is err's message when its kind says it may be shown (the
// domain's own errors never hold secrets), else a generic one.
func publicMessage(err error) string {
	if errkind.Of(err) == errkind.Other && !isRejected(err) {
		return "rotation failed; the server log has details"
	}
	return err.Error()
}
