// Package operator carries out the server's life-cycle operations —
// initialise, unseal, seal, rotate the data key — and audits each one.
//
// Every operation writes its audit event before it reports success, and
// refuses to act when the event cannot be written: no durable record, no
// privileged action. Init commits the root key, the first admin token and
// its audit event in one transaction.
package operator

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
)

// Operator runs life-cycle operations. Its fields are set once at wiring.
type Operator struct {
	Barrier  *barrier.Barrier
	Audit    *audit.Log
	Identity *identity.Directory
}

// Origin says who asks, from where, in which request.
type Origin = audit.Origin

// The bootstrap identity created by Init.
const (
	BootstrapUser = "admin"
	AdminGroup    = "admins"
)

// InitRequest is what `warder operator init` asks for.
type InitRequest struct {
	Shares    int
	Threshold int
}

// InitResponse is shown to the operator once and never stored.
type InitResponse struct {
	Shares     []string `json:"shares"`
	AdminToken string   `json:"admin_token"`
	UnsealKey  []byte   `json:"-"` // key file contents; the caller decides whether to hand it out
}

// Init generates the root key, splits the unseal key into shares and issues
// the first admin token. It is refused on an initialised server.
func (op *Operator) Init(ctx context.Context, o Origin, req InitRequest) (InitResponse, error) {
	var token string
	res, err := op.Barrier.Init(ctx, barrier.InitOptions{
		Shares:    req.Shares,
		Threshold: req.Threshold,
		InTx: func(ctx context.Context, tx *sql.Tx) error {
			// The bootstrap administrator: user admin in group admins,
			// which the built-in policy lets administer everything.
			if _, err := op.Identity.CreateUserTx(ctx, tx, o, identity.UserSpec{Name: BootstrapUser, DisplayName: "Bootstrap administrator"}); err != nil {
				return err
			}
			if _, err := op.Identity.CreateGroupTx(ctx, tx, o, AdminGroup, "Administrators: the built-in policy lets them administer everything"); err != nil {
				return err
			}
			if err := op.Identity.AddMemberTx(ctx, tx, o, AdminGroup, identity.Member{Kind: "user", Name: BootstrapUser}); err != nil {
				return err
			}
			secret, t, err := op.Identity.IssueTx(ctx, tx, identity.TokenSpec{
				Principal: identity.Principal{Kind: identity.KindUser, Name: BootstrapUser}, Bootstrap: true,
			})
			if err != nil {
				return err
			}
			token = secret
			ev := o.Event("sys.init", "", audit.OutcomeSuccess, map[string]string{
				"shares": strconv.Itoa(req.Shares), "threshold": strconv.Itoa(req.Threshold), "admin_token_id": t.ID,
			})
			_, err = op.Audit.AppendTx(ctx, tx, ev)
			return err
		},
	})
	if err != nil {
		op.recordFailure(ctx, o, "sys.init", err)
		return InitResponse{}, err
	}
	return InitResponse{Shares: res.Shares, AdminToken: token, UnsealKey: res.UnsealKey}, nil
}

// Unseal submits one share. The attempt is audited whatever its outcome;
// the share itself never is.
func (op *Operator) Unseal(ctx context.Context, o Origin, share string) (barrier.Status, error) {
	st, err := op.Barrier.Unseal(ctx, share)
	if err != nil {
		op.recordFailure(ctx, o, "sys.unseal", err)
		return st, err
	}
	details := map[string]string{"progress": strconv.Itoa(st.Progress), "threshold": strconv.Itoa(st.Threshold), "sealed": strconv.FormatBool(st.Sealed)}
	if _, aerr := op.Audit.Append(ctx, o.Event("sys.unseal", "", audit.OutcomeSuccess, details)); aerr != nil {
		// Fail closed: an unseal nobody can see in the audit trail is undone.
		if !st.Sealed {
			op.Barrier.Seal()
		} else {
			op.Barrier.ResetUnseal()
		}
		return barrier.Status{}, auditFailed(aerr)
	}
	if !st.Sealed {
		op.checkpoint(ctx)
	}
	return st, nil
}

// checkpoint signs the audit head now, so that what happened up to an
// unseal or a seal is covered without waiting for the next interval. It is
// best effort: the periodic checkpoint retries.
func (op *Operator) checkpoint(ctx context.Context) {
	op.Audit.Checkpoint(ctx)
}

// ResetUnseal discards the shares submitted so far. Anyone may ask (like
// submitting a share, it needs no token), so every reset is audited.
func (op *Operator) ResetUnseal(ctx context.Context, o Origin) error {
	if _, err := op.Audit.Append(ctx, o.Event("sys.unseal_reset", "", audit.OutcomeSuccess, nil)); err != nil {
		return auditFailed(err)
	}
	op.Barrier.ResetUnseal()
	return nil
}

// UnsealWithKeyFile unseals with the contents of an unseal key file, as the
// server does at start with --unseal-key-file.
func (op *Operator) UnsealWithKeyFile(ctx context.Context, o Origin, keyFile []byte) error {
	if err := op.Barrier.UnsealWithKeyFile(ctx, keyFile); err != nil {
		op.recordFailure(ctx, o, "sys.unseal", err)
		return err
	}
	if _, err := op.Audit.Append(ctx, o.Event("sys.unseal", "", audit.OutcomeSuccess, map[string]string{"method": "key_file"})); err != nil {
		op.Barrier.Seal()
		return auditFailed(err)
	}
	op.checkpoint(ctx)
	return nil
}

// Seal forgets the keys. It is audited first; if the event cannot be
// written the barrier is sealed anyway — sealing only ever removes access —
// and the audit failure is returned.
func (op *Operator) Seal(ctx context.Context, o Origin) error {
	_, err := op.Audit.Append(ctx, o.Event("sys.seal", "", audit.OutcomeSuccess, nil))
	if err == nil {
		op.checkpoint(ctx) // needs the keys: before sealing
	}
	op.Barrier.Seal()
	if err != nil {
		return auditFailed(err)
	}
	return nil
}

// RotateKey adds a new data-key version. Old records are re-wrapped in the
// background.
func (op *Operator) RotateKey(ctx context.Context, o Origin) (uint32, error) {
	if op.Barrier.Sealed() {
		return 0, errkind.New(errkind.Sealed, "barrier: sealed")
	}
	// Record the intent first: if that fails, nothing changes.
	if _, err := op.Audit.Append(ctx, o.Event("sys.rotate_key", "", audit.OutcomeAllow, nil)); err != nil {
		return 0, auditFailed(err)
	}
	v, err := op.Barrier.Rotate(ctx)
	if err != nil {
		op.recordFailure(ctx, o, "sys.rotate_key", err)
		return 0, err
	}
	if _, err := op.Audit.Append(ctx, o.Event("sys.rotate_key", "", audit.OutcomeSuccess, map[string]string{"key_version": strconv.FormatUint(uint64(v), 10)})); err != nil {
		return v, auditFailed(err)
	}
	return v, nil
}

// recordFailure audits a refused or failed operation. The error's message
// is recorded; errors from barrier and identity never contain secrets.
func (op *Operator) recordFailure(ctx context.Context, o Origin, action string, cause error) {
	details := map[string]string{"error": errkind.Of(cause).String()}
	if k := errkind.Of(cause); k != errkind.Other {
		details["reason"] = truncate(cause.Error(), 200)
	}
	op.Audit.Append(ctx, o.Event(action, "", audit.OutcomeFailure, details))
}

func auditFailed(err error) error {
	if errkind.Of(err) == errkind.Other {
		err = errkind.Wrap(errkind.Unavailable, err)
	}
	return fmt.Errorf("operator: audit log unavailable, operation refused: %w", err)
}

// truncate cuts s to at most n bytes without splitting a character (an
// invalid string would make the audit event itself invalid).
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
