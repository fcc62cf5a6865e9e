package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/vault"
)

// job is what one rotation or recovery works on.
type job struct {
	o    audit.Origin
	acct vault.Account
	tgt  vault.Target
	ct   connector.Target
	conn connector.Connector

	// Set while it runs.
	cause   string // why the change failed, for the audit of a dropped pending version
	dropped bool   // settle dropped the pending version (the vault audited it)
	// refused: the change was refused outright, so the target cannot
	// have taken the new credential: it was never sent (no way to set
	// it), or the target answered the statement with an error of its own
	// (a SQLSTATE of a refusal, not of a lost connection or an
	// interrupted transaction). A change that succeeded, or failed in a
	// way that leaves it unknown, is not.
	refused bool
}

func (e *Engine) load(ctx context.Context, o audit.Origin, id string) (*job, error) {
	acct, err := e.vault.Account(ctx, id)
	if err != nil {
		return nil, err
	}
	tgt, err := e.vault.Target(ctx, acct.Target)
	if err != nil {
		return nil, err
	}
	conn, err := e.conns.For(tgt.Kind)
	if err != nil {
		return nil, errkind.Wrap(errkind.Invalid, err)
	}
	return &job{o: o, acct: acct, tgt: tgt, ct: tgt.Connector(), conn: conn}, nil
}

// Rotate gives the account a new credential on its target and in the
// vault. A pending version left by an earlier attempt is settled first;
// if that already produced a fresh credential nobody has seen, it counts
// as the rotation. While another rotation of the account is in progress
// (one a check-in triggered, say) it waits for it to finish, up to
// Config.BusyWait, then makes its own: the caller asked for a credential
// made at its request, and gets one (see ErrBusy when the wait runs out).
// A failure is logged and audited; a failed step on the target is an
// *Error.
func (e *Engine) Rotate(ctx context.Context, o audit.Origin, id string) (Result, error) {
	return e.rotateAccount(ctx, o, id, true)
}

// rotateAccount is Rotate; without wait it fails with ErrBusy at once
// when another rotation holds the account.
func (e *Engine) rotateAccount(ctx context.Context, o audit.Origin, id string, wait bool) (res Result, err error) {
	j, err := e.load(ctx, o, id)
	if err != nil {
		return Result{Account: id}, err
	}
	defer func() {
		if err != nil {
			e.reportFailure(ctx, j, res, err, wait)
		}
	}()
	_, release, err := e.acquire(ctx, j.tgt, id, wait)
	if err != nil {
		return Result{Account: id}, err
	}
	defer release()

	if _, _, pending, err := e.vault.PendingCredential(ctx, id); err != nil {
		return Result{Account: id}, err
	} else if pending {
		res, err := e.settle(ctx, j)
		if err != nil || res.Outcome != Kept {
			return res, err
		}
	}
	return e.rotate(ctx, j)
}

// Initialize gives an account added without a credential (AccountSpec
// with a nil Credential: `account add --generate`) its first one, set on
// the target through its management account: a rotation from nothing.
//
// When that fails, the add is undone if that loses nothing: the account
// still has no current credential and the target refuses the pending one
// Initialize staged (or none was staged), so no credential Warder holds
// can be the live one. The account is then removed (vault.DiscardAccount,
// audited) and the error's State says so. Otherwise — the target could
// not be asked — the account stays with its pending version for recovery
// to settle, and the error says how to see or remove it. Either way the
// failure is audited.
func (e *Engine) Initialize(ctx context.Context, o audit.Origin, id string) (res Result, err error) {
	j, err := e.load(ctx, o, id)
	if err != nil {
		return Result{Account: id}, err
	}
	defer func() {
		if err != nil {
			e.reportFailure(ctx, j, res, err, true)
		}
	}()
	owner, release, err := e.acquire(ctx, j.tgt, id, true)
	if err != nil {
		return Result{Account: id}, err
	}
	defer release()

	if cur, err := e.current(ctx, id); err != nil {
		return Result{Account: id}, err
	} else if cur != nil {
		clear(cur.Secret)
		return Result{Account: id}, errkind.New(errkind.Conflict, "rotation: %s has a credential already; rotate it instead", id)
	}
	if _, _, pending, err := e.vault.PendingCredential(ctx, id); err != nil {
		return Result{Account: id}, err
	} else if pending {
		if res, err := e.settle(ctx, j); err != nil || res.Outcome != Kept {
			return res, err
		}
	}
	res, err = e.rotate(ctx, j)
	if err == nil || res.Outcome == Rotated || res.Outcome == Reset {
		return res, err // done, if with a hitch the error tells
	}
	// Undo only a change the target refused outright: one it may have
	// applied (a change that succeeded but whose login then failed, a
	// connection lost mid-statement) could leave the target with the
	// pending credential and nothing else, which must stay in the vault.
	// Undo even if the caller has gone: the claim is still held, so no
	// rotation or recovery can run in between (DiscardAccount checks).
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	state := "the account was not added"
	undone, uerr := false, error(nil)
	if j.refused {
		undone, uerr = e.undoAdd(uctx, j, owner)
	}
	if !undone {
		if uerr != nil {
			e.logger.Warn("failed add not undone", "account", id, "request_id", o.RequestID, "err", uerr)
		}
		state = fmt.Sprintf("the account stays, with its new credential pending, until recovery can tell whether the target took it: "+
			"see `warder account show %s`, or remove it with `warder account rm %s`", id, id)
	}
	var re *Error
	if errors.As(err, &re) {
		re.State = state
	} else {
		err = fmt.Errorf("%w; %s", err, state)
	}
	return res, err
}

// undoAdd removes a claimed account without a current credential when
// the target refuses its pending version, or it has none. It reports
// whether it removed it, with the error that kept it from doing so (nil
// when the pending version logs in: recovery will promote it).
func (e *Engine) undoAdd(ctx context.Context, j *job, owner string) (bool, error) {
	id := j.acct.ID
	if cur, err := e.current(ctx, id); err != nil || cur != nil {
		if cur != nil {
			clear(cur.Secret)
		}
		return false, err
	}
	pver, p, ok, err := e.vault.PendingCredential(ctx, id)
	if err != nil {
		return false, err
	}
	if ok {
		verr := j.conn.Verify(ctx, j.ct, j.acct.Username, p)
		clear(p.Secret)
		switch {
		case verr == nil:
			return false, nil
		case !isRejected(verr):
			return false, fmt.Errorf("cannot tell whether the target took the new credential: %w", verr)
		}
	}
	if err := e.vault.DiscardAccount(ctx, j.o, id, owner, pver, "the target did not take the account's first credential"); err != nil {
		return false, err
	}
	return true, nil
}

// rotate runs the two-phase protocol on a claimed account without a
// pending version.
func (e *Engine) rotate(ctx context.Context, j *job) (Result, error) {
	id := j.acct.ID
	cur, err := e.current(ctx, id)
	if err != nil {
		return Result{Account: id}, err
	}
	next, err := e.generate(ctx, j)
	if err != nil {
		return Result{Account: id}, err
	}
	defer clear(next.Secret)

	// Phase 1: the new credential is durable before the target sees it.
	ver, err := e.vault.StagePending(ctx, j.o, id, next)
	if err != nil {
		return Result{Account: id}, fmt.Errorf("rotation: stage %s: %w", id, err)
	}
	// Phase 2: change, verify, promote. Any failure hands over to settle,
	// which decides from what the target says.
	noun := credentialNoun(j.acct.Kind)
	if err := e.change(ctx, j, cur, next); err != nil {
		j.refused = refusedOutright(err)
		j.cause, _ = describe(err, j.o.RequestID)
		res, serr := e.settle(ctx, j)
		return res, targetError(j, "setting the new "+noun+" on "+j.tgt.Name, err, res, serr)
	}
	if err := j.conn.Verify(ctx, j.ct, j.acct.Username, next); err != nil {
		j.cause, _ = describe(err, j.o.RequestID)
		res, serr := e.settle(ctx, j)
		return res, targetError(j, "logging in with the new "+noun, err, res, serr)
	}
	if err := e.vault.PromotePending(ctx, j.o, id, ver); err != nil {
		// The target has the new credential and the vault holds it as
		// pending: recovery will verify and promote it.
		return Result{Account: id, Outcome: Undecided, Version: ver}, fmt.Errorf("rotation: promote %s: %w", id, err)
	}
	return Result{Account: id, Outcome: Rotated, Version: ver, FailedDependents: e.updateDependents(ctx, j, next)}, nil
}

// current returns the account's current credential, or nil when it has
// none yet (an account added to be generated).
func (e *Engine) current(ctx context.Context, id string) (*connector.Credential, error) {
	_, cur, err := e.vault.CurrentCredential(ctx, id)
	if errkind.Is(err, errkind.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &cur, nil
}

// generate makes the next credential: a key pair from the connector for
// key accounts, else a password from the account's effective policy.
func (e *Engine) generate(ctx context.Context, j *job) (connector.Credential, error) {
	if j.acct.Kind == connector.SSHKey {
		g, ok := j.conn.(connector.Generator)
		if !ok {
			return connector.Credential{}, errkind.New(errkind.Invalid, "rotation: %s targets cannot generate SSH keys", j.tgt.Kind)
		}
		return g.Generate(ctx, connector.SSHKey)
	}
	pw, err := e.vault.EffectivePolicy(j.acct).Generate()
	if err != nil {
		return connector.Credential{}, fmt.Errorf("rotation: generate password for %s: %w", j.acct.ID, err)
	}
	return connector.Credential{Kind: j.acct.Kind, Secret: pw}, nil
}

// management returns the target's management account as a login, when the
// target names one other than the account itself.
func (e *Engine) management(ctx context.Context, tgt vault.Target, username string) (*connector.Login, error) {
	m := tgt.ManagementAccount
	if m == "" || m == username {
		return nil, nil
	}
	_, cred, err := e.vault.CurrentCredential(ctx, tgt.Name+"/"+m)
	if err != nil {
		return nil, fmt.Errorf("rotation: management account %s/%s: %w", tgt.Name, m, err)
	}
	return &connector.Login{Username: m, Credential: cred}, nil
}

// change sets next on the target: through the management account when the
// target has one, else as the account itself.
func (e *Engine) change(ctx context.Context, j *job, cur *connector.Credential, next connector.Credential) error {
	as, err := e.management(ctx, j.tgt, j.acct.Username)
	if err != nil {
		return notSent{err}
	}
	if as == nil && cur == nil {
		return notSent{errkind.New(errkind.Invalid, "rotation: %s has no credential yet and %s has no management account to set one", j.acct.ID, j.tgt.Name)}
	}
	return j.conn.Change(ctx, j.ct, connector.ChangeRequest{Username: j.acct.Username, Current: cur, Next: next, As: as})
}

// settle decides what to do with a pending version from what the target
// accepts. It is the crash-recovery procedure; the caller holds the claim.
func (e *Engine) settle(ctx context.Context, j *job) (Result, error) {
	id := j.acct.ID
	pver, pending, ok, err := e.vault.PendingCredential(ctx, id)
	if err != nil {
		return Result{Account: id, Outcome: Undecided}, err
	}
	if !ok {
		return Result{Account: id, Outcome: Kept}, nil
	}
	defer clear(pending.Secret)

	// 1. The pending credential works: the change went through.
	perr := j.conn.Verify(ctx, j.ct, j.acct.Username, pending)
	if perr == nil {
		old, err := e.current(ctx, id)
		if err != nil {
			return Result{Account: id, Outcome: Undecided, Version: pver}, err
		}
		if err := e.vault.PromotePending(ctx, j.o, id, pver); err != nil {
			return Result{Account: id, Outcome: Undecided, Version: pver}, err
		}
		e.retireOldKey(ctx, j, old, pending)
		return Result{Account: id, Outcome: Rotated, Version: pver, FailedDependents: e.updateDependents(ctx, j, pending)}, nil
	}
	if !isRejected(perr) {
		return Result{Account: id, Outcome: Undecided, Version: pver}, fmt.Errorf("rotation: cannot tell whether %s changed: %w", id, perr)
	}
	// 2. The current credential still works: the change never happened.
	cur, err := e.current(ctx, id)
	if err != nil {
		return Result{Account: id, Outcome: Undecided, Version: pver}, err
	}
	if cur != nil {
		cerr := j.conn.Verify(ctx, j.ct, j.acct.Username, *cur)
		clear(cur.Secret)
		if cerr == nil {
			reason := "the target still accepts the current credential"
			if j.cause != "" {
				reason += "; the change failed: " + j.cause
			}
			if err := e.vault.DropPending(ctx, j.o, id, pver, reason); err != nil {
				return Result{Account: id, Outcome: Undecided, Version: pver}, err
			}
			j.dropped = true
			return Result{Account: id, Outcome: Kept}, nil
		}
		if !isRejected(cerr) {
			return Result{Account: id, Outcome: Undecided, Version: pver}, fmt.Errorf("rotation: cannot tell whether %s changed: %w", id, cerr)
		}
	}
	// 3. Neither logs in: the management account sets the pending one.
	as, err := e.management(ctx, j.tgt, j.acct.Username)
	if err == nil && as != nil {
		err = j.conn.Change(ctx, j.ct, connector.ChangeRequest{Username: j.acct.Username, Next: pending, As: as})
		if err == nil {
			err = j.conn.Verify(ctx, j.ct, j.acct.Username, pending)
		}
		if err == nil {
			if err := e.vault.PromotePending(ctx, j.o, id, pver); err != nil {
				return Result{Account: id, Outcome: Undecided, Version: pver}, err
			}
			return Result{Account: id, Outcome: Reset, Version: pver, FailedDependents: e.updateDependents(ctx, j, pending)}, nil
		}
		if !isRejected(err) {
			return Result{Account: id, Outcome: Undecided, Version: pver}, fmt.Errorf("rotation: reset %s through the management account: %w", id, err)
		}
	}
	// 4. Nothing works: keep every version, flag the account.
	reason := "neither the current nor the pending credential logs in"
	if as == nil {
		reason += ", and the target has no management account to reset it"
	} else {
		reason += ", and the management account could not reset it"
	}
	e.logger.Error("account out of sync", "account", id, "reason", reason)
	if err := e.vault.SetStatus(ctx, j.o, id, "out_of_sync", reason); err != nil {
		return Result{Account: id, Outcome: OutOfSync, Version: pver}, err
	}
	return Result{Account: id, Outcome: OutOfSync, Version: pver}, errkind.New(errkind.Conflict, "rotation: %s is out of sync: %s", id, reason)
}

// retireOldKey finishes a key rotation that a crash interrupted after the
// new key was authorised: the connector removes the old key once the new
// one logs in (it does not add the new one twice). Passwords need nothing:
// setting one replaces the other.
func (e *Engine) retireOldKey(ctx context.Context, j *job, old *connector.Credential, next connector.Credential) {
	if old == nil || j.acct.Kind != connector.SSHKey || old.PublicKey == next.PublicKey {
		return
	}
	defer clear(old.Secret)
	as, err := e.management(ctx, j.tgt, j.acct.Username)
	if err == nil {
		err = j.conn.Change(ctx, j.ct, connector.ChangeRequest{Username: j.acct.Username, Current: old, Next: next, As: as})
	}
	if err != nil {
		e.logger.Warn("old SSH key may still be authorised after recovery", "account", j.acct.ID, "err", err)
	}
}

// updateDependents gives every dependent the new credential and returns
// those that failed. A failure does not undo the rotation: the credential
// is already live on the target.
func (e *Engine) updateDependents(ctx context.Context, j *job, cred connector.Credential) []string {
	var failed []string
	for _, d := range j.acct.Dependents {
		if err := e.updateDependent(ctx, j, d, cred); err != nil {
			e.logger.Warn("dependent not updated", "account", j.acct.ID, "target", d.Target, "path", d.Path, "err", err)
			failed = append(failed, fmt.Sprintf("%s:%s: %v", d.Target, d.Path, err))
		}
	}
	outcome := audit.OutcomeSuccess
	if len(failed) > 0 {
		outcome = audit.OutcomeFailure
	}
	if len(j.acct.Dependents) > 0 {
		e.audit.Append(ctx, j.o.Event("account.dependents", "account:"+j.acct.ID, outcome, map[string]string{
			"updated": fmt.Sprint(len(j.acct.Dependents) - len(failed)), "failed": fmt.Sprint(len(failed)),
		}))
	}
	return failed
}

func (e *Engine) updateDependent(ctx context.Context, j *job, d vault.Dependent, cred connector.Credential) error {
	tgt, err := e.vault.Target(ctx, d.Target)
	if err != nil {
		return err
	}
	conn, err := e.conns.For(tgt.Kind)
	if err != nil {
		return err
	}
	up, ok := conn.(connector.DependentUpdater)
	if !ok {
		return fmt.Errorf("%s targets cannot hold dependents", tgt.Kind)
	}
	as, err := e.management(ctx, tgt, "")
	if err != nil {
		return err
	}
	if as == nil {
		return fmt.Errorf("target %s has no management account to write the file with", d.Target)
	}
	line := renderTemplate(d.Template, cred)
	return up.UpdateDependent(ctx, tgt.Connector(), *as, connector.Dependent{Path: d.Path, Match: d.Match, Line: line, Restart: d.Restart})
}
