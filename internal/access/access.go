// Package access gives just-in-time access: nobody holds privileged
// access by default; principals are eligible for roles and activate one
// for a task, with a reason, approvals and a time limit, after which it is
// gone on its own.
//
//   - A Role is a Cedar policy template (see authz.ValidateTemplate) and
//     optionally an ephemeral database user to create on a target.
//
//   - An Eligibility says who (a user, or the members of a group) may
//     request a role, for how long at most, with how many approvals from
//     which group, and whether a ticket, a reason and fresh MFA are needed.
//
//   - A Request asks for a role (or to extend a grant). Once enough
//     approvals are given (none for self-activation) a Grant is created.
//
//   - A Grant links the role's template to the principal as a grant policy
//     in the authz package, expiring with the grant, in the transaction
//     that creates the grant. Every access is decided by the one policy
//     engine, which skips an expired grant policy at once, and a revoked
//     one once unlinked, before any background job runs.
//
//   - A break-glass role (RoleSpec.BreakGlass) is sealed in normal
//     operation: it is opened under dual control (every eligibility needs
//     at least two approvals) or, where an eligibility allows it, at once
//     as an emergency (RequestSpec.Emergency), which raises a high-severity
//     audit event and alert, notifies the approvers and opens an Incident
//     that stays open until an approver reviews it. See breakglass.go.
//
//   - An access review (StartReview) lists the standing assignments in
//     scope (eligibilities and live grants of roles, or memberships of
//     groups) for a reviewer group to keep or revoke by a deadline, after
//     which the campaign's default decides the rest. See reviews.go.
//
// # Guarantees
//
//   - Every state change commits in one transaction with its audit event
//     (actions "access.*") and, for grants, with its grant policy.
//   - Every state change of a request or grant is sent to the Notifier
//     after it committed; notifications never block, fail or roll back a
//     change, and carry no secret.
//   - An ephemeral user's password is stored only encrypted by the barrier,
//     is shown only to the grantee while the grant lasts (RevealEphemeral),
//     and is erased when the user is dropped. Grants are recorded before
//     their user is created on the target, and Run drops users with the
//     prefix EphemeralPrefix that no live grant accounts for, so a crash
//     never leaves a user behind for long.
//   - Several servers on one PostgreSQL database serialise access's
//     changes with store.Lock("access"), taken before the authz lock,
//     which is taken before the audit chain's.
//
// # Choices where the rules are silent
//
//   - When several eligibilities match a request (the principal's own and
//     its groups'), the request is made under the one needing the fewest
//     approvals among those whose terms the request meets (TTL, ticket,
//     reason, MFA); ties go to the principal's own, then to the group
//     first by name. If none is met, the error names the rule the
//     fewest-approvals eligibility broke. Its terms are copied into the
//     request: changing the eligibility later does not change them.
//   - A ticket pattern must match the whole ticket.
//   - An extension's TTL counts from its approval, like an activation's;
//     it never moves an expiry earlier.
//   - Requests and approvals are not themselves decided by policy here:
//     eligibility and approver groups are the rules (the API may also ask
//     the policy engine about Action::"request_access" and "approve").
package access

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/vault"
)

//go:embed migrations
var migrations embed.FS

// Identity answers group membership, lists groups for access reviews and
// removes the memberships a review revokes; *identity.Directory
// implements it.
type Identity interface {
	// Parents returns the groups kind ("user", "machine", "group") name is
	// a direct member of.
	Parents(ctx context.Context, kind, name string) ([]string, error)
	// Group returns a group with its direct members; errkind.NotFound if
	// there is none.
	Group(ctx context.Context, name string) (identity.Group, error)
	// Groups returns every group with its direct members.
	Groups(ctx context.Context) ([]identity.Group, error)
	// RemoveMember removes m from group (audited by the directory);
	// errkind.NotFound if m is not a member.
	RemoveMember(ctx context.Context, o audit.Origin, group string, m identity.Member) error
}

// Rotator rotates vault accounts' credentials in the background;
// *rotation.Engine implements it.
type Rotator interface {
	Trigger(ctx context.Context, accountID, reason string)
}

// Vault knows targets and their management accounts' credentials;
// *vault.Vault implements it.
type Vault interface {
	Target(ctx context.Context, name string) (vault.Target, error)
	CurrentCredential(ctx context.Context, accountID string) (int64, connector.Credential, error)
}

// Linker stores grant policies; *authz.Authorizer implements it.
type Linker interface {
	LinkTx(ctx context.Context, tx *sql.Tx, l authz.Link) error
	UnlinkTx(ctx context.Context, tx *sql.Tx, id string) error
	Refresh(ctx context.Context)
}

// Cipher encrypts ephemeral passwords; *barrier.Barrier implements it.
type Cipher interface {
	Encrypt(ctx context.Context, aad barrier.AAD, plaintext []byte) ([]byte, error)
	Decrypt(ctx context.Context, aad barrier.AAD, ciphertext []byte) ([]byte, error)
}

// Config configures an Access. New does not modify it.
type Config struct {
	// DB holds access's tables. Required.
	DB *store.DB
	// Audit receives an event for every state change, in its transaction.
	// Required.
	Audit *audit.Log
	// Authz stores grant policies. Required.
	Authz Linker
	// Identity resolves group membership for eligibility and approver
	// groups. Required.
	Identity Identity
	// Vault resolves the targets of ephemeral roles and their management
	// accounts. Nil: roles with an ephemeral user are refused.
	Vault Vault
	// Connectors create ephemeral users; the connector of the target's
	// kind must implement connector.Ephemeral. Nil: as Vault nil.
	Connectors connector.Registry
	// Barrier encrypts ephemeral passwords. Nil: as Vault nil.
	Barrier Cipher
	// Notifier is told of every state change of requests and grants.
	// Nil: nobody is.
	Notifier Notifier
	// Rotator rotates the accounts a role names in RotateAccounts when a
	// grant of the role ends. Nil: roles with RotateAccounts are refused.
	Rotator Rotator
	// Logger receives operational logs, never secrets. Nil: discard.
	Logger *slog.Logger
	// Now is the clock; give authz the same one. Nil: time.Now.
	Now func() time.Time
	// RequestWindow is how long a request may gather approvals. Zero: 24h.
	RequestWindow time.Duration
	// MFAMaxAge is how recent a second factor must be where an
	// eligibility requires MFA. Zero: 10 minutes.
	MFAMaxAge time.Duration
	// EphemeralSkew is added to a grant's expiry for its ephemeral user's
	// own expiry on the target (a safety net behind Warder dropping it).
	// Zero: 1 minute.
	EphemeralSkew time.Duration
	// Interval is how often Run expires and reconciles. Zero: 5 seconds.
	Interval time.Duration
}

// Access runs roles, eligibility, requests and grants. It is safe for
// concurrent use.
type Access struct {
	db       *store.DB
	audit    *audit.Log
	authz    Linker
	identity Identity
	vault    Vault
	conns    connector.Registry
	cipher   Cipher
	notifier Notifier
	rotator  Rotator
	log      *slog.Logger
	now      func() time.Time
	window   time.Duration
	mfaAge   time.Duration
	skew     time.Duration
	interval time.Duration
}

// New migrates access's tables and returns an Access.
func New(ctx context.Context, cfg Config) (*Access, error) {
	switch {
	case cfg.DB == nil:
		return nil, errkind.New(errkind.Invalid, "access: no database configured")
	case cfg.Audit == nil:
		return nil, errkind.New(errkind.Invalid, "access: no audit log configured")
	case cfg.Authz == nil:
		return nil, errkind.New(errkind.Invalid, "access: no authorizer configured")
	case cfg.Identity == nil:
		return nil, errkind.New(errkind.Invalid, "access: no identity directory configured")
	case cfg.RequestWindow < 0 || cfg.MFAMaxAge < 0 || cfg.EphemeralSkew < 0 || cfg.Interval < 0:
		return nil, errkind.New(errkind.Invalid, "access: negative duration in the configuration")
	}
	a := &Access{
		db: cfg.DB, audit: cfg.Audit, authz: cfg.Authz, identity: cfg.Identity, vault: cfg.Vault,
		conns: cfg.Connectors, cipher: cfg.Barrier, notifier: cfg.Notifier, rotator: cfg.Rotator, log: cfg.Logger, now: cfg.Now,
		window: cfg.RequestWindow, mfaAge: cfg.MFAMaxAge, skew: cfg.EphemeralSkew, interval: cfg.Interval,
	}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.notifier == nil {
		a.notifier = nopNotifier{}
	}
	for _, d := range []struct {
		p   *time.Duration
		def time.Duration
	}{{&a.window, 24 * time.Hour}, {&a.mfaAge, 10 * time.Minute}, {&a.skew, time.Minute}, {&a.interval, 5 * time.Second}} {
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("access: migrations: %w", err)
	}
	if err := cfg.DB.Migrate(ctx, "access", sub); err != nil {
		return nil, fmt.Errorf("access: %w", err)
	}
	return a, nil
}

// The sentinels callers branch on; each comes wrapped in an errkind.
var (
	ErrNotEligible     = errors.New("access: not eligible")                                         // Denied
	ErrSelfApproval    = errors.New("access: a requester cannot approve or deny their own request") // Denied
	ErrNotApprover     = errors.New("access: not a member of the approver group")                   // Denied
	ErrAlreadyApproved = errors.New("access: already approved by this approver")                    // Conflict
	ErrNotPending      = errors.New("access: the request is no longer pending")                     // Conflict
	ErrWindowPassed    = errors.New("access: the request window has passed")                        // Conflict
	ErrMFARequired     = errors.New("access: a recent second factor is required")                   // Denied
	ErrGrantEnded      = errors.New("access: the grant has ended")                                  // Conflict

	ErrDualControl     = errors.New("access: a break-glass role needs at least two approvals") // Invalid
	ErrNoEmergency     = errors.New("access: emergency access is not allowed")                 // Denied
	ErrSelfReview      = errors.New("access: a reviewer cannot review their own access")       // Denied
	ErrNotReviewer     = errors.New("access: not a member of the reviewer group")              // Denied
	ErrReviewClosed    = errors.New("access: the review is closed")                            // Conflict
	ErrAlreadyDecided  = errors.New("access: the review item is already decided")              // Conflict
	ErrEmergencyActive = errors.New("access: the emergency grant is still active")             // Conflict
)

// lockName serialises access's changes across servers.
const lockName = "access"

// system is the origin of what Run does on its own.
var system = audit.Origin{Actor: "system:access"}

// newID returns n random bytes in hex.
func newID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// nowMicros returns the clock truncated to microseconds and its stored form.
func (a *Access) nowMicros() (time.Time, int64) {
	us := store.Micros(a.now())
	return store.FromMicros(us), us
}

// fromMicros is store.FromMicros with 0 as the zero time.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return store.FromMicros(us)
}

// principalUID is p as a policy principal.
func principalUID(p identity.Principal) (authz.UID, error) {
	switch p.Kind {
	case identity.KindUser:
		return authz.UID{Type: authz.TypeUser, ID: p.Name}, nil
	case identity.KindMachine:
		return authz.UID{Type: authz.TypeMachine, ID: p.Name}, nil
	}
	return authz.UID{}, errkind.New(errkind.Invalid, "access: principal %q is not a user or machine", clip(p.Actor()))
}

// parseActor is the inverse of identity.Principal.Actor.
func parseActor(s string) identity.Principal {
	k, n, _ := strings.Cut(s, ":")
	return identity.Principal{Kind: identity.PrincipalKind(k), Name: n}
}

// maxGroupDepth and maxGroups bound the group hierarchy walked.
const (
	maxGroupDepth = 16
	maxGroups     = 512
)

// groupsOf returns every group kind name is in, directly or through
// nested groups.
func (a *Access) groupsOf(ctx context.Context, kind, name string) (map[string]bool, error) {
	seen := map[string]bool{}
	level := []string{name}
	lk := kind
	for depth := 0; len(level) > 0 && depth < maxGroupDepth; depth++ {
		var next []string
		for _, n := range level {
			ps, err := a.identity.Parents(ctx, lk, n)
			if err != nil {
				return nil, fmt.Errorf("access: group membership of %s %q: %w", lk, n, err)
			}
			for _, g := range ps {
				if !seen[g] {
					seen[g] = true
					next = append(next, g)
				}
			}
		}
		if len(seen) > maxGroups {
			return nil, errkind.New(errkind.Invalid, "access: %s %q is in more than %d groups", kind, name, maxGroups)
		}
		level, lk = next, "group"
	}
	return seen, nil
}

// txn is one of access's transactions. It holds the "access" lock, and
// its audit events are appended when its function is done, after any
// grant policy change: so the authz lock (LinkTx, UnlinkTx) is always
// taken before the audit chain's, the order authz.Put takes them in,
// whatever order the events are made in.
type txn struct {
	*sql.Tx
	evs []audit.Event
}

// inTx runs fn in a txn and commits it with its audit events.
func (a *Access) inTx(ctx context.Context, fn func(tx *txn) error) error {
	return a.db.InTx(ctx, func(sqlTx *sql.Tx) error {
		if err := a.db.Lock(ctx, sqlTx, lockName); err != nil {
			return err
		}
		tx := &txn{Tx: sqlTx}
		if err := fn(tx); err != nil {
			return err
		}
		for _, ev := range tx.evs {
			if _, err := a.audit.AppendTx(ctx, sqlTx, ev); err != nil {
				return fmt.Errorf("access: audit: %w", err)
			}
		}
		return nil
	})
}

// appendTx adds ev to the events tx appends when done. It returns nil,
// for the call sites' symmetry with errors.
func (a *Access) appendTx(_ context.Context, tx *txn, ev audit.Event) error {
	tx.evs = append(tx.evs, ev)
	return nil
}

// clip shortens s for a message.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}
