// Package gateway holds what Warder's session gateways (gateway/ssh,
// gateway/postgres) share: ending a live session when the access that
// allowed it ends.
package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/authz"
)

// Checker re-evaluates a request without auditing it;
// *authz.Authorizer implements it.
type Checker interface {
	Check(ctx context.Context, req authz.Request) (authz.Decision, error)
}

// DefaultRecheck is how often Watch re-checks when given no interval.
const DefaultRecheck = 10 * time.Second

// maxCheckTime bounds one re-check: one that takes longer fails.
const maxCheckTime = 5 * time.Second

// maxCheckErrors is how many consecutive failed re-checks end a session:
// access that cannot be confirmed for that long is treated as withdrawn.
const maxCheckErrors = 3

// Messages Watch gives end, shown to the session's user.
const (
	MsgExpired   = "your access to this target has expired"
	MsgWithdrawn = "your access to this target was withdrawn"
	MsgUnchecked = "your access to this target could not be confirmed"
)

// Watch keeps a live session within its access. It calls end once, with
// one of the Msg messages, at the first of:
//   - deadline (the end of the session's check-out lease or grant; zero:
//     none);
//   - a re-check of req, every interval (zero: DefaultRecheck), that no
//     longer allows: a grant revoked or expired, a policy removed, a
//     condition (time of day, source) no longer met;
//   - maxCheckErrors consecutive re-checks that fail (the policy store is
//     unavailable): the session fails closed.
//
// A re-check that allows only through grants moves nothing: the deadline
// the caller passed already includes the Decision's NotAfter. Each
// re-check is bounded (the interval, at most 5 s) and the deadline fires on
// its own timer, so a store that hangs cannot keep a session past its
// deadline. Watch returns after end was called, or when ctx ends; end may
// run on another goroutine (the deadline's timer) and is called at most
// once.
func Watch(ctx context.Context, c Checker, req authz.Request, deadline time.Time, interval time.Duration, log *slog.Logger, end func(msg string)) {
	if interval <= 0 {
		interval = DefaultRecheck
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var once sync.Once
	ended := make(chan struct{})
	finish := func(msg string) {
		once.Do(func() {
			end(msg)
			close(ended)
		})
	}
	if !deadline.IsZero() {
		// The deadline does not wait for a re-check that hangs.
		t := time.AfterFunc(time.Until(deadline), func() { finish(MsgExpired) })
		defer t.Stop()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-ended:
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, min(interval, maxCheckTime))
		d, err := c.Check(cctx, req)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			log.Warn("gateway: re-check of a live session failed", "principal", req.Principal.String(),
				"resource", req.Resource.String(), "failures", failures, "err", err)
			if failures >= maxCheckErrors {
				finish(MsgUnchecked)
				return
			}
		case !d.Allow:
			finish(MsgWithdrawn)
			return
		default:
			failures = 0
		}
	}
}
