// Package identity knows who is calling: users (with passwords and TOTP
// multi-factor authentication), machines (AppRole-like role and secret ids),
// the groups they belong to, and the API tokens issued to them.
//
// # Guarantees
//
//   - Every state change commits in one transaction with its audit event
//     (audit.Log.AppendTx): either both are stored or neither.
//   - No secret (password, TOTP secret or code, recovery code, secret id,
//     token) is ever stored in the clear, written to a log or an audit event,
//     or repeated in an error message. Passwords are stored as Argon2id PHC
//     strings; TOTP secrets encrypted by the barrier; every other secret is
//     256 or 80 random bits, stored as its SHA-256.
//   - A token is shown once, when issued, as "wt1.<id>.<secret>"; a machine
//     secret id likewise as "wsi1.<accessor>.<secret>". Lookups find the row
//     by id and compare hashes in constant time.
//   - Disabling or deleting a principal revokes all its tokens in the same
//     transaction, and Authenticate also checks the principal's status in the
//     same query: the very next request with any of its tokens is refused.
//   - Failed logins cost the same work whether or not the user exists, and
//     return the same error (ErrBadCredentials, ErrMachineCredentials).
//   - Lockout does not depend on whether the user exists either: see below.
//
// # Lockout
//
// Login keeps one lockout count per user name, for every name alike, in
// table identity_login_failures: a failure with an unknown name, a disabled
// user or one without a password counts exactly like a wrong password or
// code of an active user, and MaxFailures of them lock the name, which then
// gets ErrRateLimited (and its "auth.lockout" event) whether or not it
// names a user. Otherwise the lockout itself would tell which names exist.
// There is no lockout state on identity_users: one table for every name is
// simpler than two, and leaves nothing to keep consistent when a user is
// created, disabled or deleted.
//
// The count is taken before the password is checked: each attempt first
// takes a place in its name's count, in one atomic statement that refuses
// when the name is locked or MaxFailures places are taken, and keeps it if
// it fails (the MaxFailures-th failure locks the name); a success clears
// the count, and an attempt that is not a failure (a missing TOTP code, an
// error before the check) gives its place back. So parallel attempts
// cannot get more than MaxFailures password checks per name and lockout
// period. The per-source limit works the same way, in memory.
//
// A row is keyed by the barrier's HMAC-SHA256 of the name (Cipher.MAC,
// purpose "identity.login_name"), not by the name or a plain hash of it: a
// name may be a mistyped password, and an unkeyed hash could be reversed by
// guessing. Login therefore needs the barrier unsealed (as do SetPassword,
// EnableUser and UnlockUser, which clear the lockout of their user, and
// Lockout, which reads it). A successful login deletes its row, in its
// transaction, unless the name is locked; then it is refused, even with
// the right password. Audit events and logs name only existing users,
// never an unknown name.
//
// The table is bounded by the names that failed recently: an attempt more
// than LockoutDuration after the name's previous one, or after its lock
// ended, starts the count again, so a row whose lock has ended and whose
// last attempt is older than that means nothing, and each failed login
// deletes a few such rows after it commits.
//
// # Key rotation
//
// TOTP secrets are the only ciphertext identity stores (table identity_totp).
// *Directory implements barrier.Rewrapper: the server registers it with
// barrier.Register("identity.totp", dir). The MAC key of lockouts derives
// from the root key, which rotation keeps, so they need no rewrap.
package identity

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/mail"
	"regexp"
	"runtime"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

//go:embed migrations
var migrations embed.FS

// Cipher encrypts and decrypts records, and computes keyed MACs;
// *barrier.Barrier implements it. Each method fails while sealed.
type Cipher interface {
	Encrypt(ctx context.Context, aad barrier.AAD, plaintext []byte) ([]byte, error)
	Decrypt(ctx context.Context, aad barrier.AAD, ciphertext []byte) ([]byte, error)
	// MAC returns HMAC-SHA256 of msg under a key for purpose that does not
	// change when data keys rotate.
	MAC(ctx context.Context, purpose string, msg []byte) ([]byte, error)
}

// Config configures a Directory. New does not modify it.
type Config struct {
	// DB holds identity's tables. Required.
	DB *store.DB
	// Audit receives an event for every state change and login attempt,
	// appended in the transaction of the change. Required.
	Audit *audit.Log
	// Barrier encrypts TOTP secrets and keys lockouts by user name.
	// Required.
	Barrier Cipher
	// Logger receives operational logs, never secrets. Nil: discard.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time

	// UserTokenTTL is the lifetime of a token issued by Login; Renew extends
	// it by as much again, up to UserTokenMaxTTL after issue. Zero: 8h.
	UserTokenTTL time.Duration
	// UserTokenMaxTTL caps the lifetime of a renewed login token. Zero: 24h.
	// It must not be less than UserTokenTTL.
	UserTokenMaxTTL time.Duration

	// MaxFailures consecutive failed logins with one user name (whether or
	// not a user of that name exists, is active or has a password; wrong
	// password or wrong code) lock that name for LockoutDuration. Failures
	// more than LockoutDuration apart do not add up. Attempts being checked
	// count until they succeed, so at most MaxFailures are checked at once.
	// The count is kept in the database, so it holds across processes.
	// Zero: 5.
	MaxFailures int
	// LockoutDuration is how long a lockout lasts, and how long a failure
	// counts towards one. Zero: 15m.
	LockoutDuration time.Duration

	// SourceRate is the rate, in failed logins per second, at which each
	// source address (IPv4 address or IPv6 /64) regains attempts, and
	// SourceBurst how many failures it may have in a row; then its logins
	// fail with errkind.RateLimited until it regains one. Attempts being
	// checked count until they succeed, so at most SourceBurst run at once.
	// The buckets live in memory, per process, at most 100,000 of them
	// (then the least recently used is forgotten). Zero: 10 per minute
	// (1/6 per second), burst 10.
	SourceRate  float64
	SourceBurst int

	// Issuer is the issuer label of TOTP enrollments. "": "Warder".
	Issuer string

	// Password sets the Argon2id parameters for new password hashes; a
	// stored hash with other parameters is rehashed at the next successful
	// login. Zero: DefaultPasswordParams().
	Password PasswordParams
}

// Directory is the store of principals, groups and tokens. It is safe for
// concurrent use.
type Directory struct {
	db      *store.DB
	audit   *audit.Log
	cipher  Cipher
	logger  *slog.Logger
	now     func() time.Time
	cfg     Config // defaults filled in
	params  PasswordParams
	dummy   string        // a PHC hash of a random password: the work spent on unknown users
	hashSem chan struct{} // bounds concurrent Argon2 computations (memory)
	limiter *sourceLimiter
	parents *parentCache

	// hookMu protects hooks.
	hookMu sync.Mutex
	hooks  []func(ctx context.Context, ev LifecycleEvent)

	// Tests set these before use to interleave concurrent work at fixed
	// points; nil otherwise.
	testAfterSecondFactor func()           // in Login's transaction, after the second factor is spent
	testConfirmRead       func(tx *sql.Tx) // in ConfirmTOTP's transaction, after the enrollment is read
}

// New checks cfg, migrates identity's tables and returns a Directory.
func New(ctx context.Context, cfg Config) (*Directory, error) {
	switch {
	case cfg.DB == nil:
		return nil, errkind.New(errkind.Invalid, "identity: no database configured")
	case cfg.Audit == nil:
		return nil, errkind.New(errkind.Invalid, "identity: no audit log configured")
	case cfg.Barrier == nil:
		return nil, errkind.New(errkind.Invalid, "identity: no barrier configured")
	case cfg.UserTokenTTL < 0 || cfg.UserTokenMaxTTL < 0 || cfg.LockoutDuration < 0 ||
		cfg.MaxFailures < 0 || cfg.SourceRate < 0 || cfg.SourceBurst < 0:
		return nil, errkind.New(errkind.Invalid, "identity: negative duration, count or rate in config")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UserTokenTTL == 0 {
		cfg.UserTokenTTL = 8 * time.Hour
	}
	if cfg.UserTokenMaxTTL == 0 {
		cfg.UserTokenMaxTTL = 24 * time.Hour
	}
	if cfg.UserTokenMaxTTL < cfg.UserTokenTTL {
		return nil, errkind.New(errkind.Invalid, "identity: user token max TTL %v is less than the TTL %v", cfg.UserTokenMaxTTL, cfg.UserTokenTTL)
	}
	if cfg.MaxFailures == 0 {
		cfg.MaxFailures = 5
	}
	if cfg.LockoutDuration == 0 {
		cfg.LockoutDuration = 15 * time.Minute
	}
	if cfg.SourceRate == 0 {
		cfg.SourceRate = 10.0 / 60
	}
	if cfg.SourceBurst == 0 {
		cfg.SourceBurst = 10
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "Warder"
	}
	params := cfg.Password
	if params == (PasswordParams{}) {
		params = DefaultPasswordParams()
	}
	if err := params.check(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("identity: migrations: %w", err)
	}
	if err := cfg.DB.Migrate(ctx, "identity", sub); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	d := &Directory{
		db:      cfg.DB,
		audit:   cfg.Audit,
		cipher:  cfg.Barrier,
		logger:  cfg.Logger,
		now:     cfg.Now,
		cfg:     cfg,
		params:  params,
		hashSem: make(chan struct{}, max(2, runtime.GOMAXPROCS(0))),
		limiter: newSourceLimiter(cfg.SourceRate, cfg.SourceBurst),
	}
	d.parents = newParentCache(cfg.DB, cfg.Now)
	dummyPW := make([]byte, 32)
	rand.Read(dummyPW)
	if d.dummy, err = hashPassword(dummyPW, params); err != nil {
		return nil, err
	}
	return d, nil
}

// nowMicros returns the current time, truncated to microseconds, and its
// stored form.
func (d *Directory) nowMicros() (time.Time, int64) {
	us := store.Micros(d.now())
	return store.FromMicros(us), us
}

// PrincipalKind says what sort of principal a token speaks for.
type PrincipalKind string

// The principal kinds.
const (
	KindUser    PrincipalKind = "user"
	KindMachine PrincipalKind = "machine"
)

// Principal is a user or a machine.
type Principal struct {
	Kind PrincipalKind `json:"kind"`
	Name string        `json:"name"`
}

// Actor is how the principal is named in audit events: "user:alice",
// "machine:ci".
func (p Principal) Actor() string { return string(p.Kind) + ":" + p.Name }

// valid reports whether p names a principal of a known kind by a valid name.
func (p Principal) valid() bool {
	return (p.Kind == KindUser || p.Kind == KindMachine) && validName(p.Name)
}

// LifecycleEvent tells subscribers that a principal stopped being usable.
type LifecycleEvent struct {
	Kind      string    `json:"kind"` // "user.disabled", "user.deleted", "machine.disabled" or "machine.deleted"
	Principal Principal `json:"principal"`
	At        time.Time `json:"at"`
}

// The lifecycle event kinds.
const (
	EventUserDisabled    = "user.disabled"
	EventUserDeleted     = "user.deleted"
	EventMachineDisabled = "machine.disabled"
	EventMachineDeleted  = "machine.deleted"
)

// Subscribe adds fn to the functions called after a user or a machine is
// disabled or deleted. Call it while wiring the server. fn runs
// synchronously, after the change has committed, in the goroutine of the
// call that made it, in order of subscription; it handles (logs) its own
// errors and should return promptly.
func (d *Directory) Subscribe(fn func(ctx context.Context, ev LifecycleEvent)) {
	d.hookMu.Lock()
	defer d.hookMu.Unlock()
	d.hooks = append(d.hooks, fn)
}

// fire calls the subscribers with ev.
func (d *Directory) fire(ctx context.Context, ev LifecycleEvent) {
	d.hookMu.Lock()
	hooks := append([]func(context.Context, LifecycleEvent){}, d.hooks...)
	d.hookMu.Unlock()
	for _, fn := range hooks {
		fn(ctx, ev)
	}
}

// appendTx writes ev in tx, wrapping a failure.
func (d *Directory) appendTx(ctx context.Context, tx *sql.Tx, ev audit.Event) error {
	if _, err := d.audit.AppendTx(ctx, tx, ev); err != nil {
		return fmt.Errorf("identity: audit: %w", err)
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// validName reports whether s is a valid user, machine or group name:
// 1 to 64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit.
func validName(s string) bool { return nameRE.MatchString(s) }

// checkName returns an Invalid error unless s is a valid name.
func checkName(what, s string) error {
	if !validName(s) {
		return errkind.New(errkind.Invalid, "identity: %s name must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", what)
	}
	return nil
}

// checkText returns an Invalid error unless s is at most max bytes of
// printable UTF-8.
func checkText(what, s string, max int) error {
	if len(s) > max || !utf8.ValidString(s) {
		return errkind.New(errkind.Invalid, "identity: %s must be at most %d bytes of UTF-8", what, max)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return errkind.New(errkind.Invalid, "identity: %s holds a control character", what)
		}
	}
	return nil
}

// checkEmail accepts "" or a bare address such as "alice@example.com".
func checkEmail(s string) error {
	if s == "" {
		return nil
	}
	a, err := mail.ParseAddress(s)
	if len(s) > 254 || err != nil || a.Address != s || a.Name != "" {
		return errkind.New(errkind.Invalid, "identity: email must be a bare address such as alice@example.com")
	}
	return nil
}

// notFound maps sql.ErrNoRows to a NotFound error naming what.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return errkind.New(errkind.NotFound, format, args...)
	}
	return err
}
