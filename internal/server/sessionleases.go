package server

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// checkouter checks accounts out and in; *vault.Vault implements it.
type checkouter interface {
	Checkout(ctx context.Context, o audit.Origin, req vault.CheckoutRequest) (vault.Lease, error)
	Checkin(ctx context.Context, o audit.Origin, p identity.Principal, account string) (vault.Lease, error)
}

// leaseVault is what sessionLeases needs of the vault; *vault.Vault
// implements it.
type leaseVault interface {
	Checkout(ctx context.Context, o audit.Origin, req vault.CheckoutRequest) (vault.Lease, error)
	Leases(ctx context.Context, account string) (vault.LeaseList, error)
	CheckinLease(ctx context.Context, o audit.Origin, p identity.Principal, leaseID string) (vault.Lease, error)
}

// sessionLeases shares one vault check-out among the concurrent gateway
// sessions of one principal on one account in this process: a person
// holds at most one lease per account, yet opens a second terminal, runs
// scp beside a shell, or points pgbench -c 8 at the database gateway. The
// first session checks the account out (authorised by connect); the
// sessions that join while it is held use the same lease and end with it;
// the last one to end checks the account in, which rotates the credential
// if the account rotates on check-in. Other principals still find the
// account checked out (exclusive accounts stay exclusive).
//
// Sessions on another server process do not share: the vault refuses
// their check-out while this process holds the lease.
type sessionLeases struct {
	vault leaseVault
	log   *slog.Logger
	now   func() time.Time // nil: time.Now

	mu   sync.Mutex
	held map[leaseKey]*sharedLease
}

type leaseKey struct{ actor, account string }

// sharedLease is one check-out and the sessions using it.
type sharedLease struct {
	ready chan struct{} // closed once lease or err is set
	lease vault.Lease
	err   error
	refs  int // sessions using it, including ones waiting on ready
}

func newSessionLeases(v leaseVault, log *slog.Logger) *sessionLeases {
	return &sessionLeases{vault: v, log: log, held: map[leaseKey]*sharedLease{}}
}

// acquire checks req.Account out for a session through s, or, with a nil
// s, through v without sharing; see sessionLeases.Acquire.
func acquire(ctx context.Context, s *sessionLeases, v checkouter, log *slog.Logger, o audit.Origin, req vault.CheckoutRequest) (vault.Lease, func(), error) {
	if s != nil {
		return s.Acquire(ctx, o, req)
	}
	l, err := v.Checkout(ctx, o, req)
	if err != nil {
		return vault.Lease{}, nil, err
	}
	var once sync.Once
	return l, func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if _, err := v.Checkin(ctx, o, req.Principal, req.Account); err != nil && !errkind.Is(err, errkind.NotFound) && log != nil {
				log.Warn("gateway: check-in after session", "account", req.Account, "err", err)
			}
		})
	}, nil
}

// Acquire returns a lease on req.Account for req.Principal, with a copy of
// its credential that the caller may zero, and the function that ends the
// caller's use of it (idempotent). It checks the account out unless this
// process already holds an unexpired lease of the principal on it, which
// it then shares.
func (s *sessionLeases) Acquire(ctx context.Context, o audit.Origin, req vault.CheckoutRequest) (vault.Lease, func(), error) {
	k := leaseKey{req.Principal.Actor(), req.Account}
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	s.mu.Lock()
	sh := s.held[k]
	if sh != nil {
		select {
		case <-sh.ready:
			if sh.err != nil || !now().Before(sh.lease.ExpiresAt) {
				sh = nil // failed or expired: check out afresh
			}
		default: // being checked out: wait for it
		}
	}
	first := sh == nil
	if first {
		sh = &sharedLease{ready: make(chan struct{})}
		s.held[k] = sh
	}
	sh.refs++
	s.mu.Unlock()

	if first {
		sh.lease, sh.err = s.vault.Checkout(ctx, o, req)
		close(sh.ready)
	} else {
		select {
		case <-sh.ready:
		case <-ctx.Done():
			s.release(k, sh, o, req.Principal)
			return vault.Lease{}, nil, ctx.Err()
		}
		if sh.err == nil {
			// Join only a lease the vault still holds open (not checked
			// in or force-checked-in meanwhile), with its current expiry
			// (it may have been extended).
			s.mu.Lock()
			cur := sh.lease
			s.mu.Unlock()
			open, err := s.open(ctx, cur)
			if err != nil || open.ID == "" {
				s.release(k, sh, o, req.Principal)
				if err != nil {
					return vault.Lease{}, nil, err
				}
				s.forget(k, sh)
				return s.Acquire(ctx, o, req)
			}
			s.mu.Lock()
			sh.lease.ExpiresAt = open.ExpiresAt
			s.mu.Unlock()
		}
	}
	if sh.err != nil {
		err := sh.err
		s.release(k, sh, o, req.Principal)
		return vault.Lease{}, nil, err
	}
	s.mu.Lock()
	l := sh.lease
	s.mu.Unlock()
	l.Credential = cloneCredential(sh.lease.Credential)
	var once sync.Once
	return l, func() { once.Do(func() { s.release(k, sh, o, req.Principal) }) }, nil
}

// open returns the vault's open lease l.ID, or a zero Lease if it ended.
func (s *sessionLeases) open(ctx context.Context, l vault.Lease) (vault.Lease, error) {
	ls, err := s.vault.Leases(ctx, l.Account)
	if err != nil {
		return vault.Lease{}, err
	}
	for _, x := range ls.Leases {
		if x.ID == l.ID {
			return x, nil
		}
	}
	return vault.Lease{}, nil
}

// forget stops sharing sh: new sessions check out afresh.
func (s *sessionLeases) forget(k leaseKey, sh *sharedLease) {
	s.mu.Lock()
	if s.held[k] == sh {
		delete(s.held, k)
	}
	s.mu.Unlock()
}

// release ends one session's use of sh; the last one checks the account
// in, unless the lease failed or was replaced after it expired (the vault
// ended it already, and a check-in now would end its successor).
func (s *sessionLeases) release(k leaseKey, sh *sharedLease, o audit.Origin, p identity.Principal) {
	s.mu.Lock()
	sh.refs--
	last := sh.refs == 0
	current := s.held[k] == sh
	if last && current {
		delete(s.held, k)
	}
	s.mu.Unlock()
	if !last {
		return
	}
	if sh.lease.Credential != nil {
		clear(sh.lease.Credential.Secret)
	}
	if sh.err == nil {
		// By lease id: never a newer lease of the principal on the account.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.vault.CheckinLease(ctx, o, p, sh.lease.ID); err != nil && !errkind.Is(err, errkind.NotFound) {
			s.log.Warn("gateway: check-in after session", "account", k.account, "lease", sh.lease.ID, "err", err)
		}
	}
}

func cloneCredential(c *connector.Credential) *connector.Credential {
	if c == nil {
		return nil
	}
	cp := *c
	cp.Secret = bytes.Clone(c.Secret)
	return &cp
}
