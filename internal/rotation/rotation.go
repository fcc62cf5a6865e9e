// Package rotation changes privileged credentials on the real systems,
// without ever losing one.
//
// # The two-phase protocol
//
// A rotation of one account:
//
//  1. claims the account (a lease row in the store, so rotations of one
//     account are serialised across server processes, and a crashed
//     owner's claim expires);
//  2. generates the next credential and stores it, encrypted, as the
//     account's *pending* version — before the target is touched;
//  3. changes it on the target (as the account itself, or through the
//     target's management account when the account's own credential is
//     refused);
//  4. verifies it by logging in with it;
//  5. promotes pending to current; then updates the account's dependents
//     and reports any that failed.
//
// A crash or error between 2 and 5 leaves a pending version. Recover
// settles it from what the target says, never from what the store
// assumes: if the pending credential logs in, it is promoted; else if the
// current one does, the pending one is dropped; else the management
// account sets the target to the pending credential, which is then
// verified and promoted; else the account is marked out_of_sync and an
// audit event raised. When the target cannot be reached, nothing is
// decided: the pending version stays until a later attempt can tell. No
// step ever discards a credential that might be the live one.
package rotation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/vault"
)

// Config configures an Engine. Zero values are documented per field.
type Config struct {
	Vault      *vault.Vault       // required
	Connectors connector.Registry // required
	Audit      *audit.Log         // required
	Logger     *slog.Logger       // nil: discard
	Now        func() time.Time   // nil: time.Now
	// Owner names this process in rotation claims. "": hostname, pid and
	// a random suffix.
	Owner string
	// ClaimTTL is how long a claim holds before another process may take
	// over a rotation this one abandoned. Zero: 2 minutes. It must exceed
	// the longest rotation (every connector call has its own timeout).
	// On SQLite, which one process opens at a time, Run ends a dead
	// predecessor's claims at start instead of waiting for them.
	ClaimTTL time.Duration
	// ScheduleInterval is how often Run looks for accounts due for a
	// scheduled rotation and pending versions left to recover. Zero: 15s.
	ScheduleInterval time.Duration
	// VerifyInterval is how often Run verifies every stored credential
	// (the heartbeat). Zero: 1 hour. Negative: never.
	VerifyInterval time.Duration
	// Workers bounds rotations running at once across all targets.
	// Zero: 8. Each target also has its own MaxConcurrentRotations.
	Workers int
	// BusyWait bounds how long Rotate, Initialize and Verify wait for a
	// rotation of the same account already in progress (one a check-in
	// triggered, say) to finish before they fail with ErrBusy, as an
	// errkind.Unavailable error. The caller's context bounds it too.
	// Zero: 30 seconds. Negative: they fail at once, with ErrBusy alone.
	// Background work (triggered rotations, recovery, the heartbeat)
	// never waits: it retries or skips the account.
	BusyWait time.Duration
}

// Engine rotates, recovers and verifies credentials.
type Engine struct {
	cfg    Config
	vault  *vault.Vault
	conns  connector.Registry
	audit  *audit.Log
	logger *slog.Logger
	now    func() time.Time
	owner  string

	workers chan struct{} // a slot per running rotation
	claims  atomic.Int64  // numbers this process's claims

	// mu protects the following.
	mu      sync.Mutex
	targets map[string]chan struct{} // per-target rotation slots
	queued  map[string]bool          // accounts queued or running in the background

	wg sync.WaitGroup // background rotations started by Trigger
}

// New returns an Engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Vault == nil || cfg.Connectors == nil || cfg.Audit == nil {
		return nil, errors.New("rotation: Vault, Connectors and Audit are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = 2 * time.Minute
	}
	if cfg.ScheduleInterval <= 0 {
		cfg.ScheduleInterval = 15 * time.Second
	}
	if cfg.VerifyInterval == 0 {
		cfg.VerifyInterval = time.Hour
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.BusyWait == 0 {
		cfg.BusyWait = 30 * time.Second
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		rand.Read(b)
		cfg.Owner = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	return &Engine{
		cfg: cfg, vault: cfg.Vault, conns: cfg.Connectors, audit: cfg.Audit, logger: cfg.Logger, now: cfg.Now, owner: cfg.Owner,
		workers: make(chan struct{}, cfg.Workers),
		targets: map[string]chan struct{}{},
		queued:  map[string]bool{},
	}, nil
}

// ErrBusy means another rotation of the account is in progress. A caller
// that waited (Config.BusyWait) gets it wrapped in an errkind.Unavailable
// error that says how long it waited.
var ErrBusy = errkind.New(errkind.Conflict, "rotation: a rotation of this account is already in progress")

// Outcome says how a rotation or recovery ended.
type Outcome string

// The outcomes.
const (
	Rotated   Outcome = "rotated"     // a new credential is current and verified
	Kept      Outcome = "kept"        // the current credential stays (pending dropped, or nothing to do)
	Reset     Outcome = "reset"       // the management account set the credential, now current
	OutOfSync Outcome = "out_of_sync" // no stored credential logs in and no reset was possible
	Undecided Outcome = "undecided"   // the target could not be asked; the pending version stays
)

// Result reports one rotation.
type Result struct {
	Account string  `json:"account"`
	Outcome Outcome `json:"outcome"`
	Version int64   `json:"version"`
	// Dependents lists dependents that could not be updated, with why.
	FailedDependents []string `json:"failed_dependents,omitempty"`
	// Error says why the rotation did not complete, when it did not (set by
	// RotateTarget, which reports many rotations at once).
	Error string `json:"error,omitempty"`
}

// slot takes a worker slot and one of the target's slots; release frees
// both.
func (e *Engine) slot(ctx context.Context, t vault.Target) (release func(), err error) {
	limit := t.MaxConcurrentRotations
	if limit <= 0 {
		limit = 4
	}
	e.mu.Lock()
	ts, ok := e.targets[t.Name]
	if !ok || cap(ts) != limit {
		ts = make(chan struct{}, limit)
		e.targets[t.Name] = ts
	}
	e.mu.Unlock()
	select {
	case e.workers <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case ts <- struct{}{}:
	case <-ctx.Done():
		<-e.workers
		return nil, ctx.Err()
	}
	return func() { <-ts; <-e.workers }, nil
}

// claim serialises work on one account, across processes. With wait, it
// waits up to Config.BusyWait for another rotation's claim to end.
func (e *Engine) claim(ctx context.Context, account string, wait bool) (release func(), err error) {
	_, release, err = e.claimAs(ctx, account, wait)
	return release, err
}

// acquire takes the account's rotation claim and a rotation slot of its
// target (slot), released together. Without wait it takes the slot first
// and fails with ErrBusy at once when the account is claimed. With wait,
// the wait for another rotation of the account comes first, holding no
// slot, so that callers waiting on one busy account do not hold the
// slots rotations of other accounts need; once the slot is had the claim
// is renewed, since waiting for the slot may have outlasted it, and a
// claim lost meanwhile is ErrBusy.
func (e *Engine) acquire(ctx context.Context, tgt vault.Target, account string, wait bool) (owner string, release func(), err error) {
	if !wait {
		rel, err := e.slot(ctx, tgt)
		if err != nil {
			return "", nil, err
		}
		owner, unclaim, err := e.claimAs(ctx, account, false)
		if err != nil {
			rel()
			return "", nil, err
		}
		return owner, func() { unclaim(); rel() }, nil
	}
	owner, unclaim, err := e.claimAs(ctx, account, true)
	if err != nil {
		return "", nil, err
	}
	rel, err := e.slot(ctx, tgt)
	if err != nil {
		unclaim()
		return "", nil, err
	}
	if ok, err := e.vault.ClaimRotation(ctx, account, owner, e.cfg.ClaimTTL); !ok || err != nil {
		rel()
		unclaim()
		if err == nil {
			err = ErrBusy
		}
		return "", nil, err
	}
	return owner, func() { unclaim(); rel() }, nil
}

// claimAs is claim, also returning the claim's owner, which the vault
// checks where an action is allowed only while the claim is held
// (DiscardAccount).
func (e *Engine) claimAs(ctx context.Context, account string, wait bool) (owner string, release func(), err error) {
	// One owner per claim: the vault lets an owner renew its own claim,
	// and two goroutines of this process must exclude each other too.
	owner = fmt.Sprintf("%s#%d", e.owner, e.claims.Add(1))
	var d time.Duration
	if wait {
		d = e.cfg.BusyWait
	}
	ok, err := e.vault.ClaimRotationWait(ctx, account, owner, e.cfg.ClaimTTL, d)
	if err != nil {
		if ctx.Err() != nil {
			return "", nil, errkind.Wrap(errkind.Unavailable, fmt.Errorf("rotation: waiting for the rotation of %s in progress: %w", account, err))
		}
		return "", nil, fmt.Errorf("rotation: claim %s: %w", account, err)
	}
	if !ok {
		if d > 0 {
			return "", nil, errkind.Wrap(errkind.Unavailable, fmt.Errorf("%w, and it did not finish within %v; try again later", ErrBusy, d))
		}
		return "", nil, ErrBusy
	}
	return owner, func() {
		// Release even when ctx is done: a held claim delays the next
		// rotation by ClaimTTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := e.vault.ReleaseRotation(rctx, account, owner); err != nil {
			e.logger.Warn("release rotation claim", "account", account, "err", err)
		}
	}, nil
}

// isRejected reports whether err says the target refused a credential.
func isRejected(err error) bool { return errors.Is(err, connector.ErrRejected) }

// renderTemplate puts the secret into a dependent's line template.
func renderTemplate(tmpl string, cred connector.Credential) string {
	return strings.ReplaceAll(tmpl, "{{password}}", string(cred.Secret))
}
