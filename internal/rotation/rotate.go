package rotation

import (
	"context"
	"errors"
	"fmt"

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
// as the rotation.
func (e *Engine) Rotate(ctx context.Context, o audit.Origin, id string) (Result, error) {
	j, err := e.load(ctx, o, id)
	if err != nil {
		return Result{Account: id}, err
	}
	release, err := e.slot(ctx, j.tgt)
	if err != nil {
		return Result{Account: id}, err
	}
	defer release()
	unclaim, err := e.claim(ctx, id)
	if err != nil {
		return Result{Account: id}, err
	}
	defer unclaim()

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
	if err := e.change(ctx, j, cur, next); err != nil {
		res, serr := e.settle(ctx, j)
		return res, errors.Join(fmt.Errorf("rotation: change %s on %s: %w", id, j.tgt.Name, err), serr)
	}
	if err := j.conn.Verify(ctx, j.ct, j.acct.Username, next); err != nil {
		res, serr := e.settle(ctx, j)
		return res, errors.Join(fmt.Errorf("rotation: new credential of %s did not log in: %w", id, err), serr)
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
		return err
	}
	if as == nil && cur == nil {
		return errkind.New(errkind.Invalid, "rotation: %s has no credential yet and %s has no management account to set one", j.acct.ID, j.tgt.Name)
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
			if err := e.vault.DropPending(ctx, j.o, id, pver, "the target still accepts the current credential"); err != nil {
				return Result{Account: id, Outcome: Undecided, Version: pver}, err
			}
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
