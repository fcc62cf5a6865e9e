package vault

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
)

// Why a check-out was refused after the policy allowed it: the "error"
// detail of its "account.checkout" audit event (outcome failure). Other
// failures name their errkind ("not_found", "internal", …).
const (
	RefusedCheckedOut          = "checked_out"           // max_checkouts leases are held
	RefusedPromised            = "promised_to_waiters"   // a slot is free, but others wait for it
	RefusedHeldAlready         = "held_already"          // the principal holds a lease on it
	RefusedRotating            = "rotating"              // a pending version is being settled
	RefusedRotationDue         = "rotation_due"          // it awaits its rotation after a check-in
	RefusedRotationTimeout     = "rotation_timeout"      // a rotation did not finish within RotationWait
	RefusedOutOfSync           = "out_of_sync"           // a rotation ended unsettled; an administrator must act
	RefusedNoCredential        = "no_credential"         // the account has no current credential
	RefusedDroppedFromWaitlist = "dropped_from_waitlist" // the waiting request was removed
	RefusedWaitEnded           = "wait_ended"            // the request's context ended while it waited
)

// refusal is a check-out refused for a reason its audit event names.
type refusal struct {
	category string
	err      error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// Refusal returns the category (a Refused constant) of an error Checkout
// returned for a refusal after the policy allowed, or "" for any other
// error: for callers that explain refusals in their own words.
func Refusal(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.category
	}
	return ""
}

// refusalCategory is the audit category of a failed check-out.
func refusalCategory(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.category
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return RefusedWaitEnded
	}
	return errkind.Of(err).String()
}

// gate records why the rotation state of a, which has a pending version or
// a rotation due, keeps it from being handed out at now.
func (at *attempt) gate(ctx context.Context, tx *sql.Tx, a Account, now int64) error {
	rotating, err := rotatingTx(ctx, tx, a.ID, now)
	if err != nil {
		return err
	}
	switch {
	case a.HasPending && a.Status == StatusOutOfSync && !rotating:
		// The rotation gave up: neither credential logs in. Recovery
		// keeps trying, but nothing a waiter could see soon.
		at.gated, at.gateKind, at.stuck = "is out of sync: its last rotation could not be settled", RefusedOutOfSync, true
	case a.HasPending:
		at.gated, at.gateKind = "is being rotated", RefusedRotating
	default:
		at.gated, at.gateKind = "awaits rotation after its last check-in", RefusedRotationDue
	}
	return nil
}

// auditRefusal records a check-out the policy allowed but the vault
// refused (or that failed), as "account.checkout" with outcome failure:
// the request's reason, ticket and action, and the refusal's category,
// never a holder's lease id or a credential. The event is written even
// when ctx has ended (a waiter that gave up); if it cannot be written the
// refusal stands and the failure is logged.
func (v *Vault) auditRefusal(ctx context.Context, o audit.Origin, req CheckoutRequest, err error) {
	details := map[string]string{"error": refusalCategory(err), "reason": req.Reason, "action": req.Action}
	if req.Ticket != "" {
		details["ticket"] = req.Ticket
	}
	if req.Wait {
		details["wait"] = "true"
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, aerr := v.audit.Append(actx, o.Event("account.checkout", "account:"+req.Account, audit.OutcomeFailure, details)); aerr != nil {
		v.log.ErrorContext(actx, "vault: audit refused check-out", "account", req.Account, "err", aerr)
	}
}
