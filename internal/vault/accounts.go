package vault

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Account statuses.
const (
	StatusOK         = "ok"          // the stored credential logged in when last verified or rotated
	StatusOutOfSync  = "out_of_sync" // it did not: the target's credential is not the stored one
	StatusUnverified = "unverified"  // not verified since it was stored
)

// AccountSpec describes an account to add.
type AccountSpec struct {
	Target   string
	Username string
	// Kind of credential. "": password.
	Kind connector.CredentialKind
	// Credential is the initial credential, stored as version 1 (current).
	// Nil when the caller will generate and set one (StagePending,
	// PromotePending).
	Credential *connector.Credential
	// MaxCheckouts is how many leases may be open at once. Zero: 1.
	MaxCheckouts int
	// RotateOnCheckin: nil means true.
	RotateOnCheckin *bool
	// RotateEvery schedules rotations. Zero: none; else at least a minute.
	RotateEvery    time.Duration
	PasswordPolicy *PasswordPolicy // nil: the target's
	Dependents     []Dependent
}

// Account is a privileged account on a target. It never holds a
// credential.
type Account struct {
	ID                string                   `json:"id"` // "target/username"
	Target            string                   `json:"target"`
	Username          string                   `json:"username"`
	Kind              connector.CredentialKind `json:"kind"`
	MaxCheckouts      int                      `json:"max_checkouts"`
	RotateOnCheckin   bool                     `json:"rotate_on_checkin"`
	RotateEvery       time.Duration            `json:"-"` // JSON: rotate_every, as "24h0m0s"
	PasswordPolicy    *PasswordPolicy          `json:"password_policy,omitempty"`
	Dependents        []Dependent              `json:"dependents,omitempty"`
	Status            string                   `json:"status"`
	CredentialVersion int64                    `json:"credential_version"` // of the current credential; 0: none yet
	HasPending        bool                     `json:"has_pending"`
	// RotationDue says a lease ended and the credential it showed must be
	// rotated before the account is checked out again.
	RotationDue    bool      `json:"rotation_due"`
	LastRotatedAt  time.Time `json:"last_rotated_at,omitzero"`
	LastVerifiedAt time.Time `json:"last_verified_at,omitzero"`
	NextRotationAt time.Time `json:"next_rotation_at,omitzero"`
	CreatedAt      time.Time `json:"created_at"`

	targetPolicy *PasswordPolicy // the target's, for EffectivePolicy
}

type accountJSON Account

// MarshalJSON writes RotateEvery as a duration string.
func (a Account) MarshalJSON() ([]byte, error) {
	var every string
	if a.RotateEvery > 0 {
		every = a.RotateEvery.String()
	}
	return json.Marshal(struct {
		accountJSON
		RotateEvery string `json:"rotate_every,omitempty"`
	}{accountJSON(a), every})
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (a *Account) UnmarshalJSON(b []byte) error {
	var w struct {
		*accountJSON
		RotateEvery string `json:"rotate_every"`
	}
	w.accountJSON = (*accountJSON)(a)
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	a.RotateEvery = 0
	if w.RotateEvery != "" {
		d, err := time.ParseDuration(w.RotateEvery)
		if err != nil {
			return fmt.Errorf("vault: rotate_every: %w", err)
		}
		a.RotateEvery = d
	}
	return nil
}

// AccountUpdate changes an account's settings; nil fields stay.
type AccountUpdate struct {
	MaxCheckouts    *int
	RotateOnCheckin *bool
	RotateEvery     *time.Duration
	PasswordPolicy  *PasswordPolicy
	// ClearPasswordPolicy makes the account use its target's policy.
	ClearPasswordPolicy bool
	Dependents          *[]Dependent
}

// AddAccount adds an account, with its initial credential if given.
func (v *Vault) AddAccount(ctx context.Context, o audit.Origin, spec AccountSpec) (Account, error) {
	id := spec.Target + "/" + spec.Username
	if _, _, err := SplitAccountID(id); err != nil {
		return Account{}, err
	}
	if spec.Kind == "" {
		spec.Kind = connector.Password
	}
	switch spec.Kind {
	case connector.Password, connector.SSHKey, connector.APIKey:
	default:
		return Account{}, errkind.New(errkind.Invalid, "vault: credential kind %q is not password, ssh_key or api_key", clip(string(spec.Kind)))
	}
	if spec.MaxCheckouts == 0 {
		spec.MaxCheckouts = 1
	}
	rotate := spec.RotateOnCheckin == nil || *spec.RotateOnCheckin
	if err := errors.Join(checkMaxCheckouts(spec.MaxCheckouts), checkRotateEvery(spec.RotateEvery), checkDependents(spec.Dependents)); err != nil {
		return Account{}, err
	}
	if spec.PasswordPolicy != nil {
		if err := spec.PasswordPolicy.Validate(); err != nil {
			return Account{}, err
		}
		p := spec.PasswordPolicy.normal()
		spec.PasswordPolicy = &p
	}
	var ct []byte
	if c := spec.Credential; c != nil {
		if err := checkCredential(c, spec.Kind); err != nil {
			return Account{}, err
		}
		var err error
		if ct, err = v.cipher.Encrypt(ctx, credentialAAD(id, 1), c.Secret); err != nil {
			return Account{}, fmt.Errorf("vault: encrypt credential of %s: %w", id, err)
		}
	}
	_, now := v.nowMicros()
	var next int64
	if spec.RotateEvery > 0 {
		next = now + spec.RotateEvery.Microseconds()
	}
	deps, _ := json.Marshal(nonNilDeps(spec.Dependents))
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		for _, t := range append([]string{spec.Target}, depTargets(spec.Dependents)...) {
			if err := targetExistsTx(ctx, tx, t); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO vault_accounts (id, target, username, kind, max_checkouts, rotate_on_checkin,
			rotate_every, password_policy, dependents, status, next_rotation_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			id, spec.Target, spec.Username, string(spec.Kind), spec.MaxCheckouts, boolInt(rotate),
			spec.RotateEvery.Microseconds(), encodePolicy(spec.PasswordPolicy), string(deps), StatusUnverified, next, now)
		if store.IsUniqueViolation(err) {
			return errkind.New(errkind.Conflict, "vault: account %q exists", id)
		}
		if err != nil {
			return fmt.Errorf("vault: add account %q: %w", id, err)
		}
		details := map[string]string{"kind": string(spec.Kind), "max_checkouts": strconv.Itoa(spec.MaxCheckouts)}
		if ct != nil {
			if _, err := tx.ExecContext(ctx, `INSERT INTO vault_credentials (account_id, version, state, kind, credential_ct, public_key, created_at)
				VALUES ($1, 1, 'current', $2, $3, $4, $5)`, id, string(spec.Kind), ct, spec.Credential.PublicKey, now); err != nil {
				return fmt.Errorf("vault: store credential of %q: %w", id, err)
			}
			details["credential_version"] = "1"
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("account.add", "account:"+id, audit.OutcomeSuccess, details))
		return err
	})
	if err != nil {
		return Account{}, err
	}
	return v.Account(ctx, id)
}

func targetExistsTx(ctx context.Context, tx *sql.Tx, name string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM vault_targets WHERE name = $1`, name).Scan(&n); err != nil {
		return fmt.Errorf("vault: read target %q: %w", name, err)
	}
	if n == 0 {
		return errkind.New(errkind.NotFound, "vault: no target %q", name)
	}
	return nil
}

func depTargets(ds []Dependent) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Target)
	}
	return out
}

func nonNilDeps(ds []Dependent) []Dependent {
	if ds == nil {
		return []Dependent{}
	}
	return ds
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

const accountColumns = `a.id, a.target, a.username, a.kind, a.max_checkouts, a.rotate_on_checkin, a.rotate_every,
	a.password_policy, a.dependents, a.status, a.last_rotated_at, a.last_verified_at, a.next_rotation_at,
	a.rotation_due_at, a.created_at, t.password_policy,
	COALESCE((SELECT c.version FROM vault_credentials c WHERE c.account_id = a.id AND c.state = 'current'), 0),
	(SELECT COUNT(*) FROM vault_credentials c WHERE c.account_id = a.id AND c.state = 'pending')`

const accountFrom = ` FROM vault_accounts a JOIN vault_targets t ON t.name = a.target`

func scanAccount(s scanner) (Account, error) {
	var a Account
	var kind, pol, deps, tpol string
	var rotate, pending int
	var every, rotated, verified, next, due, created int64
	if err := s.Scan(&a.ID, &a.Target, &a.Username, &kind, &a.MaxCheckouts, &rotate, &every, &pol, &deps, &a.Status,
		&rotated, &verified, &next, &due, &created, &tpol, &a.CredentialVersion, &pending); err != nil {
		return Account{}, err
	}
	a.Kind = connector.CredentialKind(kind)
	a.RotateOnCheckin = rotate != 0
	a.RotateEvery = time.Duration(every) * time.Microsecond
	a.HasPending = pending > 0
	a.RotationDue = due != 0
	a.LastRotatedAt, a.LastVerifiedAt, a.NextRotationAt = fromMicros(rotated), fromMicros(verified), fromMicros(next)
	a.CreatedAt = store.FromMicros(created)
	var err error
	if a.PasswordPolicy, err = decodePolicy(pol); err != nil {
		return Account{}, fmt.Errorf("vault: account %q: %w", a.ID, err)
	}
	if a.targetPolicy, err = decodePolicy(tpol); err != nil {
		return Account{}, fmt.Errorf("vault: target of %q: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(deps), &a.Dependents); err != nil {
		return Account{}, fmt.Errorf("vault: account %q: dependents: %w", a.ID, err)
	}
	if len(a.Dependents) == 0 {
		a.Dependents = nil
	}
	return a, nil
}

// queryAccounts returns the accounts matching where (with args), by id.
func (v *Vault) queryAccounts(ctx context.Context, where string, args ...any) ([]Account, error) {
	rows, err := v.db.QueryContext(ctx, `SELECT `+accountColumns+accountFrom+` `+where+` ORDER BY a.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("vault: list accounts: %w", err)
	}
	defer rows.Close()
	out := []Account{}
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("vault: list accounts: %w", err)
	}
	return out, nil
}

// Accounts lists the accounts of target, or all accounts when target is "".
func (v *Vault) Accounts(ctx context.Context, target string) ([]Account, error) {
	if target == "" {
		return v.queryAccounts(ctx, "")
	}
	return v.queryAccounts(ctx, `WHERE a.target = $1`, target)
}

// Account returns the account id ("target/username").
func (v *Vault) Account(ctx context.Context, id string) (Account, error) {
	a, err := scanAccount(v.db.QueryRowContext(ctx, `SELECT `+accountColumns+accountFrom+` WHERE a.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, errkind.New(errkind.NotFound, "vault: no account %q", clip(id))
	}
	if err != nil {
		return Account{}, fmt.Errorf("vault: read account %q: %w", clip(id), err)
	}
	return a, nil
}

// accountTx reads account id inside tx.
func accountTx(ctx context.Context, tx *sql.Tx, id string) (Account, error) {
	a, err := scanAccount(tx.QueryRowContext(ctx, `SELECT `+accountColumns+accountFrom+` WHERE a.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, errkind.New(errkind.NotFound, "vault: no account %q", clip(id))
	}
	if err != nil {
		return Account{}, fmt.Errorf("vault: read account %q: %w", clip(id), err)
	}
	return a, nil
}

// RemoveAccount removes an account with its credential history, leases
// and waiters. An account checked out is a Conflict.
func (v *Vault) RemoveAccount(ctx context.Context, o audit.Origin, id string) error {
	_, now := v.nowMicros()
	return v.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := v.db.Lock(ctx, tx, "vault.account:"+id); err != nil {
			return err
		}
		if _, err := accountTx(ctx, tx, id); err != nil {
			return err
		}
		holders, err := activeLeasesTx(ctx, tx, id, now)
		if err != nil {
			return err
		}
		if len(holders) > 0 {
			return errkind.New(errkind.Conflict, "vault: %s is checked out (%s); check it in first", id, describeHolders(holders))
		}
		if err := deleteAccountTx(ctx, tx, id); err != nil {
			return err
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("account.remove", "account:"+id, audit.OutcomeSuccess, nil))
		return err
	})
}

// DiscardAccount undoes the add of an account that never had a current
// credential: an account added to have its first credential generated
// (AccountSpec.Credential nil) whose target did not take it. The caller
// (the rotation engine, holding the account's rotation claim as owner) has
// made sure that no credential it stores can be live on the target; it
// names the pending version it checked (0: none). In one transaction it
// removes the account with its pending or retired versions and waiters,
// audited "account.remove" with the reason and "discarded": "true". It is
// a Conflict, and nothing is removed, when the account has a current
// credential or a lease (that is RemoveAccount's, after a check-in), when
// owner no longer holds the claim (it expired, and another rotation may
// have run), or when the pending version is not the one checked.
func (v *Vault) DiscardAccount(ctx context.Context, o audit.Origin, id, owner string, pendingVersion int64, reason string) error {
	_, now := v.nowMicros()
	return v.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := v.db.Lock(ctx, tx, "vault.account:"+id); err != nil {
			return err
		}
		a, err := accountTx(ctx, tx, id)
		if err != nil {
			return err
		}
		var by string
		var until int64
		if err := tx.QueryRowContext(ctx, `SELECT rotating_by, rotating_until FROM vault_accounts WHERE id = $1`, id).Scan(&by, &until); err != nil {
			return fmt.Errorf("vault: discard account %q: %w", id, err)
		}
		if owner == "" || by != owner || until <= now {
			return errkind.New(errkind.Conflict, "vault: %s is not claimed for rotation by the caller any more; it is not discarded", id)
		}
		var pver int64
		switch err := tx.QueryRowContext(ctx, `SELECT version FROM vault_credentials WHERE account_id = $1 AND state = $2`,
			id, StatePending).Scan(&pver); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("vault: discard account %q: %w", id, err)
		}
		if pver != pendingVersion {
			return errkind.New(errkind.Conflict, "vault: %s's pending version is %d, not the %d checked; it is not discarded", id, pver, pendingVersion)
		}
		if a.CredentialVersion != 0 {
			return errkind.New(errkind.Conflict, "vault: %s has a credential (version %d); it is not discarded", id, a.CredentialVersion)
		}
		holders, err := activeLeasesTx(ctx, tx, id, now)
		if err != nil {
			return err
		}
		if len(holders) > 0 {
			return errkind.New(errkind.Conflict, "vault: %s is checked out (%s); it is not discarded", id, describeHolders(holders))
		}
		if err := deleteAccountTx(ctx, tx, id); err != nil {
			return err
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("account.remove", "account:"+id, audit.OutcomeSuccess,
			map[string]string{"discarded": "true", "reason": clipText(reason, maxReason)}))
		return err
	})
}

// deleteAccountTx deletes an account with its credentials, leases and
// waiters; the caller holds its lock and audits.
func deleteAccountTx(ctx context.Context, tx *sql.Tx, id string) error {
	for _, q := range []string{
		`DELETE FROM vault_credentials WHERE account_id = $1`,
		`DELETE FROM vault_leases WHERE account_id = $1`,
		`DELETE FROM vault_waitlist WHERE account_id = $1`,
		`DELETE FROM vault_accounts WHERE id = $1`,
	} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("vault: delete account %q: %w", id, err)
		}
	}
	return nil
}

// UpdateAccount changes an account's settings and returns it.
func (v *Vault) UpdateAccount(ctx context.Context, o audit.Origin, id string, u AccountUpdate) (Account, error) {
	var sets []string
	var args []any
	details := map[string]string{}
	set := func(col string, val any, detail string) {
		args = append(args, val)
		sets = append(sets, fmt.Sprintf("%s = $%d", col, len(args)))
		details[col] = detail
	}
	if u.MaxCheckouts != nil {
		if err := checkMaxCheckouts(*u.MaxCheckouts); err != nil {
			return Account{}, err
		}
		set("max_checkouts", *u.MaxCheckouts, strconv.Itoa(*u.MaxCheckouts))
	}
	if u.RotateOnCheckin != nil {
		set("rotate_on_checkin", boolInt(*u.RotateOnCheckin), strconv.FormatBool(*u.RotateOnCheckin))
	}
	if u.RotateEvery != nil {
		if err := checkRotateEvery(*u.RotateEvery); err != nil {
			return Account{}, err
		}
		set("rotate_every", u.RotateEvery.Microseconds(), u.RotateEvery.String())
	}
	switch {
	case u.ClearPasswordPolicy && u.PasswordPolicy != nil:
		return Account{}, errkind.New(errkind.Invalid, "vault: both a password policy and clearing it given")
	case u.ClearPasswordPolicy:
		set("password_policy", "", "cleared")
	case u.PasswordPolicy != nil:
		if err := u.PasswordPolicy.Validate(); err != nil {
			return Account{}, err
		}
		p := u.PasswordPolicy.normal()
		set("password_policy", encodePolicy(&p), "set")
	}
	if u.Dependents != nil {
		if err := checkDependents(*u.Dependents); err != nil {
			return Account{}, err
		}
		b, _ := json.Marshal(nonNilDeps(*u.Dependents))
		set("dependents", string(b), strconv.Itoa(len(*u.Dependents)))
	}
	if len(sets) == 0 {
		return v.Account(ctx, id)
	}
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		a, err := accountTx(ctx, tx, id)
		if err != nil {
			return err
		}
		if u.Dependents != nil {
			for _, t := range depTargets(*u.Dependents) {
				if err := targetExistsTx(ctx, tx, t); err != nil {
					return err
				}
			}
		}
		if u.RotateEvery != nil {
			// The schedule runs from the last rotation, or from now.
			var next int64
			if *u.RotateEvery > 0 {
				from := micros(a.LastRotatedAt)
				if from == 0 {
					_, from = v.nowMicros()
				}
				next = from + u.RotateEvery.Microseconds()
			}
			args = append(args, next)
			sets = append(sets, fmt.Sprintf("next_rotation_at = $%d", len(args)))
		}
		args = append(args, id)
		q := `UPDATE vault_accounts SET ` + strings.Join(sets, ", ") + fmt.Sprintf(` WHERE id = $%d`, len(args))
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("vault: update account %q: %w", id, err)
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("account.update", "account:"+id, audit.OutcomeSuccess, details))
		return err
	})
	if err != nil {
		return Account{}, err
	}
	return v.Account(ctx, id)
}
