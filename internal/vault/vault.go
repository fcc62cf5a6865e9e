// Package vault keeps the privileged credentials Warder manages: targets
// (systems), accounts on them with their credential versions, check-out
// leases with exclusive and limited accounts and a FIFO waitlist, and
// versioned application secrets.
//
// # Guarantees
//
//   - A credential or secret value is stored only encrypted by the barrier,
//     bound to its record (AAD {"vault.credential", account id, version} and
//     {"vault.secret", path, version}), and never appears in an Account, a
//     Lease's JSON, an audit event, a log or an error message.
//   - Every state change commits in one transaction with its audit event.
//   - Check-out is decided by policy (action "checkout" on Account::"t/u")
//     and serialised per account by store.Lock, so that several server
//     processes on one PostgreSQL database never hand out more than
//     max_checkouts leases at once. A lease past its expiry is never counted
//     or reported as held, whether or not ExpireLeases has ended it.
//   - Waiters are served in the order they joined the waitlist.
//   - When a lease of an account that rotates on check-in ends while a
//     rotation engine listens (OnRelease), the account is marked rotation
//     due and is not handed out again until the rotation is promoted
//     (PromotePending) or the mark is cleared (ClearRotationDue). Nor is an
//     account with a pending credential version: which credential is live
//     is not known until the rotation finishes or is recovered. A check-out
//     that finds the account so gated, and otherwise free, waits for the
//     rotation (Config.RotationWait) rather than fail at once.
//   - Every check-out refused after the policy allowed it, and every
//     request that joins a waitlist, is audited too ("account.checkout"
//     with outcome failure and the refusal's category in "error";
//     "account.waitlist_join"), as is a refused lease extension.
//
// # Key rotation
//
// *Vault implements barrier.Rewrapper for the credential and secret tables:
// the server registers it with barrier.Register("vault", v).
package vault

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

//go:embed migrations
var migrations embed.FS

// Cipher encrypts and decrypts records; *barrier.Barrier implements it.
// Both fail while the barrier is sealed.
type Cipher interface {
	Encrypt(ctx context.Context, aad barrier.AAD, plaintext []byte) ([]byte, error)
	Decrypt(ctx context.Context, aad barrier.AAD, ciphertext []byte) ([]byte, error)
}

// Decider decides and audits access requests; *authz.Authorizer
// implements it.
type Decider interface {
	Authorize(ctx context.Context, o audit.Origin, r authz.Request) (authz.Decision, error)
}

// Config configures a Vault. New does not modify it.
type Config struct {
	// DB holds the vault's tables. Required.
	DB *store.DB
	// Audit receives an event for every state change, check-out and
	// secret read. Required.
	Audit *audit.Log
	// Barrier encrypts credentials and secrets. Required.
	Barrier Cipher
	// Authz decides check-outs and secret reads. Required.
	Authz Decider
	// Logger receives operational logs, never secrets. Nil: discard.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Kinds lists the target kinds AddTarget accepts. Nil: the kinds of
	// Connectors, or, without them, postgres, mysql, linux and redis.
	Kinds []string
	// Connectors, when set, validate a new target's address and options
	// (the connector's CheckTarget) before it is stored, so a target that
	// could never be reached or verified is refused when it is added.
	Connectors connector.Registry
	// DefaultLeaseTTL is the lease lifetime when a check-out names none.
	// Zero: 1 hour.
	DefaultLeaseTTL time.Duration
	// MaxLeaseTTL bounds a lease's lifetime from its check-out, extensions
	// included. Zero: 8 hours. It must not be less than DefaultLeaseTTL.
	MaxLeaseTTL time.Duration
	// WaitPoll is how often a waiting check-out looks for a free slot and
	// proves it is still waiting. A waiter not heard from for 10 polls (at
	// least 5 seconds) is dropped from the waitlist. Zero: 200ms.
	WaitPoll time.Duration
	// RotationWait bounds how long a check-out that does not join the
	// waitlist waits for a rotation of the account to finish (after a
	// check-in that rotates it, or while a pending version is settled)
	// before it fails with an Unavailable error; the request's context
	// bounds it too. Zero: 30 seconds. Negative: it does not wait, and
	// fails with a Conflict at once.
	RotationWait time.Duration
}

// Vault stores targets, accounts, credentials, leases and secrets. It is
// safe for concurrent use.
type Vault struct {
	db         *store.DB
	audit      *audit.Log
	cipher     Cipher
	authz      Decider
	log        *slog.Logger
	now        func() time.Time
	kinds      []string
	connectors connector.Registry
	defaultTTL time.Duration
	maxTTL     time.Duration
	poll       time.Duration
	stale      time.Duration // a waiter whose last_seen is older is dropped
	rotWait    time.Duration // Config.RotationWait; <= 0: do not wait

	// hookMu protects onRelease.
	hookMu    sync.Mutex
	onRelease []func(ctx context.Context, account, reason string)
	onEnd     []func(ctx context.Context, account, reason string) // OnLeaseEnd

	// relMu protects released, which is closed (and replaced) whenever a
	// lease ends, a waiter is served, or a rotation is promoted, dropped or
	// gives up its claim in this process, to wake waiters (check-outs and
	// rotations waiting for a claim) before their next poll.
	relMu    sync.Mutex
	released chan struct{}
}

// New checks cfg, migrates the vault's tables and returns a Vault.
func New(ctx context.Context, cfg Config) (*Vault, error) {
	switch {
	case cfg.DB == nil:
		return nil, errkind.New(errkind.Invalid, "vault: no database configured")
	case cfg.Audit == nil:
		return nil, errkind.New(errkind.Invalid, "vault: no audit log configured")
	case cfg.Barrier == nil:
		return nil, errkind.New(errkind.Invalid, "vault: no barrier configured")
	case cfg.Authz == nil:
		return nil, errkind.New(errkind.Invalid, "vault: no authorizer configured")
	case cfg.DefaultLeaseTTL < 0 || cfg.MaxLeaseTTL < 0 || cfg.WaitPoll < 0:
		return nil, errkind.New(errkind.Invalid, "vault: negative lease TTL or wait poll")
	}
	v := &Vault{
		db: cfg.DB, audit: cfg.Audit, cipher: cfg.Barrier, authz: cfg.Authz, log: cfg.Logger, now: cfg.Now,
		kinds: cfg.Kinds, connectors: cfg.Connectors, defaultTTL: cfg.DefaultLeaseTTL, maxTTL: cfg.MaxLeaseTTL, poll: cfg.WaitPoll,
		rotWait: cfg.RotationWait, released: make(chan struct{}),
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.kinds == nil && v.connectors != nil {
		for k := range v.connectors {
			v.kinds = append(v.kinds, k)
		}
		slices.Sort(v.kinds)
	}
	if v.kinds == nil {
		v.kinds = []string{"postgres", "mysql", "linux", "redis"}
	}
	if v.defaultTTL == 0 {
		v.defaultTTL = time.Hour
	}
	if v.maxTTL == 0 {
		v.maxTTL = 8 * time.Hour
	}
	if v.maxTTL < v.defaultTTL {
		return nil, errkind.New(errkind.Invalid, "vault: max lease TTL %v is less than the default %v", v.maxTTL, v.defaultTTL)
	}
	if v.poll == 0 {
		v.poll = 200 * time.Millisecond
	}
	if v.rotWait == 0 {
		v.rotWait = 30 * time.Second
	}
	v.stale = max(10*v.poll, 5*time.Second)
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("vault: migrations: %w", err)
	}
	if err := v.db.Migrate(ctx, "vault", sub); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return v, nil
}

// OnRelease adds fn to the functions called after a lease ends (check-in,
// expiry, forced check-in, holder disabled) on an account that rotates on
// check-in; reason is "checkin", "expired", "forced" or "holder_disabled".
// fn runs synchronously after the change has committed, in the goroutine
// that ended the lease; it handles its own errors and should return
// promptly. Call it while wiring the server.
//
// While at least one fn is registered, such a lease end also marks the
// account rotation due (see the package documentation): the subscriber is
// expected to rotate it once no lease is active (Leases), and to promote
// the rotation or call ClearRotationDue.
func (v *Vault) OnRelease(fn func(ctx context.Context, account, reason string)) {
	v.hookMu.Lock()
	defer v.hookMu.Unlock()
	v.onRelease = append(v.onRelease, fn)
}

// OnLeaseEnd registers fn to be called after any lease ends (check-in,
// forced check-in, expiry, the holder disabled), whether or not the
// account rotates on check-in, with the account id and the reason (an End
// constant). Like OnRelease, fn runs synchronously after the commit and
// should return promptly; unlike it, registering it marks nothing due.
func (v *Vault) OnLeaseEnd(fn func(ctx context.Context, account, reason string)) {
	v.hookMu.Lock()
	defer v.hookMu.Unlock()
	v.onEnd = append(v.onEnd, fn)
}

// rotationGate reports whether lease ends mark accounts rotation due.
func (v *Vault) rotationGate() bool {
	v.hookMu.Lock()
	defer v.hookMu.Unlock()
	return len(v.onRelease) > 0
}

// released is a lease that ended, for the OnRelease hooks.
type release struct {
	account string
	reason  string
	rotate  bool // the account rotates on check-in
}

// fireReleases wakes local waiters and calls the OnRelease hooks for every
// ended lease of an account that rotates on check-in.
func (v *Vault) fireReleases(ctx context.Context, rs []release) {
	if len(rs) == 0 {
		return
	}
	v.wake()
	v.hookMu.Lock()
	hooks := append([]func(context.Context, string, string){}, v.onRelease...)
	ends := append([]func(context.Context, string, string){}, v.onEnd...)
	v.hookMu.Unlock()
	for _, r := range rs {
		for _, fn := range ends {
			fn(ctx, r.account, r.reason)
		}
		if !r.rotate {
			continue
		}
		for _, fn := range hooks {
			fn(ctx, r.account, r.reason)
		}
	}
}

// wake wakes the waiters of this process.
func (v *Vault) wake() {
	v.relMu.Lock()
	close(v.released)
	v.released = make(chan struct{})
	v.relMu.Unlock()
}

// wakeup returns a channel closed at the next wake.
func (v *Vault) wakeup() <-chan struct{} {
	v.relMu.Lock()
	defer v.relMu.Unlock()
	return v.released
}

// Run ends expired leases about every second until ctx is done. Call it
// once, in its own goroutine.
func (v *Vault) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := v.ExpireLeases(ctx); err != nil && ctx.Err() == nil {
			v.log.ErrorContext(ctx, "vault: expire leases", "err", err)
		} else if n > 0 {
			v.log.InfoContext(ctx, "vault: ended expired leases", "count", n)
		}
		if err := v.dropStaleWaiters(ctx); err != nil && ctx.Err() == nil {
			v.log.ErrorContext(ctx, "vault: drop stale waiters", "err", err)
		}
	}
}

// Parents resolves the vault's entities for the policy engine:
// Account::"t/u" is in Target::"t", and Secret::"t/…" is in Target::"t"
// when a target named t exists. Other entities have no parents here.
func (v *Vault) Parents(ctx context.Context, uid authz.UID) ([]authz.UID, error) {
	switch uid.Type {
	case authz.TypeAccount:
		if t, _, ok := strings.Cut(uid.ID, "/"); ok && t != "" {
			return []authz.UID{{Type: authz.TypeTarget, ID: t}}, nil
		}
	case authz.TypeSecret:
		t, _, ok := strings.Cut(uid.ID, "/")
		if !ok || !targetNameRE.MatchString(t) {
			return nil, nil
		}
		var n int
		if err := v.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM vault_targets WHERE name = $1`, t).Scan(&n); err != nil {
			return nil, fmt.Errorf("vault: resolve %s: %w", uid, err)
		}
		if n > 0 {
			return []authz.UID{{Type: authz.TypeTarget, ID: t}}, nil
		}
	}
	return nil, nil
}

// system is the origin of events the vault writes on its own.
var system = audit.Origin{Actor: "system:vault"}

// newID returns 16 random bytes in hex.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// nowMicros returns the current time truncated to microseconds and its
// stored form.
func (v *Vault) nowMicros() (time.Time, int64) {
	us := store.Micros(v.now())
	return store.FromMicros(us), us
}

// fromMicros is store.FromMicros, with 0 as the zero time.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return store.FromMicros(us)
}

// micros is store.Micros, with the zero time as 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return store.Micros(t)
}

// querier is a *store.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}
