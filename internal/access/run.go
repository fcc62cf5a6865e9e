package access

import (
	"context"
	"errors"
	"time"

	"github.com/warderhq/warder/internal/errkind"
)

// Run expires grants and requests and reconciles ephemeral users every
// Config.Interval until ctx ends. Call it once, in its own goroutine;
// several servers may each run it.
func (a *Access) Run(ctx context.Context) {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		if err := a.Sweep(ctx); err != nil && ctx.Err() == nil {
			a.log.WarnContext(ctx, "access: sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep does one round of Run's work: it ends the grants past their
// expiry (audited "access.grant.expire": their policies unlinked, their
// ephemeral users dropped, their accounts rotated), expires the pending
// requests past their window ("access.request.expire"), reconciles
// ephemeral users with the grants, triggers rotations left pending, and
// closes the access reviews past their deadline (CloseDueReviews). It goes
// on past errors and returns them joined.
func (a *Access) Sweep(ctx context.Context) error {
	_, err1 := a.ExpireGrants(ctx)
	_, err2 := a.ExpireRequests(ctx)
	_, err3 := a.CloseDueReviews(ctx)
	return errors.Join(err1, err2, err3, a.reconcile(ctx), a.retryRotations(ctx))
}

// ExpireGrants ends the grants past their expiry and returns how many.
// (They stopped applying at their expiry; this cleans up.)
func (a *Access) ExpireGrants(ctx context.Context) (int, error) {
	now, us := a.nowMicros()
	gs, err := queryGrants(ctx, a.db, now, `WHERE ended_at = 0 AND expires_at <= $1 ORDER BY expires_at LIMIT 500`, us)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, g := range gs {
		err := a.inTx(ctx, func(tx *txn) error {
			return a.endGrantTx(ctx, tx, system, &g, GrantExpired, system.Actor, us, "access.grant.expire", nil)
		})
		if errors.Is(err, ErrGrantEnded) {
			continue // another server did it
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		a.ended(ctx, system, EventExpired, g, "")
	}
	return n, errors.Join(errs...)
}

// ExpireRequests marks the pending requests past their window expired and
// returns how many.
func (a *Access) ExpireRequests(ctx context.Context) (int, error) {
	_, us := a.nowMicros()
	rs, err := queryRequests(ctx, a.db, `SELECT `+requestColumns+` FROM access_requests
		WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT 500`, us)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, r := range rs {
		err := a.inTx(ctx, func(tx *txn) error {
			return a.closeTx(ctx, tx, system, &r, StatusExpired, system.Actor, "", us, "access.request.expire")
		})
		if errkind.Is(err, errkind.Conflict) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		a.notify(EventRequestExpired, system, r, nil)
	}
	return n, errors.Join(errs...)
}
