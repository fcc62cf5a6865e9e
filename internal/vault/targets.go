package vault

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Names: a target, an account's username, an option key.
var (
	targetNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	usernameRE   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}$`)
	optionKeyRE  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// Limits on a target's settings.
const (
	maxOptions        = 32
	maxOptionValue    = 4096
	maxHostLen        = 253
	maxRotationsLimit = 64
	defaultRotations  = 4
)

// TargetSpec describes a target to add.
type TargetSpec struct {
	Name    string            // ^[a-z0-9][a-z0-9_.-]{0,63}$
	Kind    string            // one of Config.Kinds
	Host    string            // required
	Port    int               // 1..65535
	Options map[string]string // kind-specific, checked by the connector
	// ManagementAccount is the username of an account on this target that
	// can reset the others' credentials. "": none.
	ManagementAccount string
	// PasswordPolicy applies to accounts that have none. Nil: the default.
	PasswordPolicy *PasswordPolicy
	// MaxConcurrentRotations bounds parallel rotations on the target.
	// Zero: 4. At most 64.
	MaxConcurrentRotations int
	// Rules are the command/statement rules the gateways apply to the
	// target's sessions. Nil: none.
	Rules []Rule
}

// Target is a managed system.
type Target struct {
	Name                   string            `json:"name"`
	Kind                   string            `json:"kind"`
	Host                   string            `json:"host"`
	Port                   int               `json:"port"`
	Options                map[string]string `json:"options,omitempty"`
	ManagementAccount      string            `json:"management_account,omitempty"`
	PasswordPolicy         *PasswordPolicy   `json:"password_policy,omitempty"`
	MaxConcurrentRotations int               `json:"max_concurrent_rotations"`
	Rules                  []Rule            `json:"rules,omitempty"`
	CreatedAt              time.Time         `json:"created_at"`
}

// Connector returns t's connection settings for its connector.
func (t Target) Connector() connector.Target {
	return connector.Target{Kind: t.Kind, Name: t.Name, Host: t.Host, Port: t.Port, Options: maps.Clone(t.Options)}
}

// validate checks s and fills in its defaults.
func (v *Vault) validateTarget(s *TargetSpec) error {
	switch {
	case !targetNameRE.MatchString(s.Name):
		return errkind.New(errkind.Invalid, "vault: target name %q is not 1 to 64 of a-z, 0-9, _ . - starting with a letter or digit", clip(s.Name))
	case !slices.Contains(v.kinds, s.Kind):
		return errkind.New(errkind.Invalid, "vault: target kind %q is not one of %s", clip(s.Kind), strings.Join(v.kinds, ", "))
	case s.Host == "" || len(s.Host) > maxHostLen || strings.ContainsAny(s.Host, " \t\r\n/\x00"):
		return errkind.New(errkind.Invalid, "vault: target host %q is empty, too long or malformed", clip(s.Host))
	case s.Port < 1 || s.Port > 65535:
		return errkind.New(errkind.Invalid, "vault: target port %d is not between 1 and 65535", s.Port)
	case s.ManagementAccount != "" && !usernameRE.MatchString(s.ManagementAccount):
		return errkind.New(errkind.Invalid, "vault: management account %q is not a valid username", clip(s.ManagementAccount))
	case s.MaxConcurrentRotations < 0 || s.MaxConcurrentRotations > maxRotationsLimit:
		return errkind.New(errkind.Invalid, "vault: max concurrent rotations %d is not between 0 and %d", s.MaxConcurrentRotations, maxRotationsLimit)
	case len(s.Options) > maxOptions:
		return errkind.New(errkind.Invalid, "vault: more than %d target options", maxOptions)
	}
	for k, val := range s.Options {
		if !optionKeyRE.MatchString(k) || len(val) > maxOptionValue || strings.IndexByte(val, 0) >= 0 {
			return errkind.New(errkind.Invalid, "vault: target option %q is malformed or its value too long", clip(k))
		}
	}
	if err := validateRules(s.Rules); err != nil {
		return err
	}
	if c := v.connectors[s.Kind]; c != nil {
		t := connector.Target{Kind: s.Kind, Name: s.Name, Host: s.Host, Port: s.Port, Options: s.Options}
		if err := c.CheckTarget(t); err != nil {
			return errkind.New(errkind.Invalid, "vault: %v", err)
		}
	}
	if s.PasswordPolicy != nil {
		if err := s.PasswordPolicy.Validate(); err != nil {
			return err
		}
		p := s.PasswordPolicy.normal()
		s.PasswordPolicy = &p
	}
	if s.MaxConcurrentRotations == 0 {
		s.MaxConcurrentRotations = defaultRotations
	}
	return nil
}

// AddTarget adds a target. A target of the same name is a Conflict.
func (v *Vault) AddTarget(ctx context.Context, o audit.Origin, spec TargetSpec) (Target, error) {
	if err := v.validateTarget(&spec); err != nil {
		return Target{}, err
	}
	created, us := v.nowMicros()
	opts, _ := json.Marshal(nonNil(spec.Options))
	pol := encodePolicy(spec.PasswordPolicy)
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO vault_targets (name, kind, host, port, options, management_account,
			password_policy, max_concurrent_rotations, created_at, rules) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			spec.Name, spec.Kind, spec.Host, spec.Port, string(opts), spec.ManagementAccount, pol, spec.MaxConcurrentRotations, us,
			encodeRules(spec.Rules))
		if store.IsUniqueViolation(err) {
			return errkind.New(errkind.Conflict, "vault: target %q exists", spec.Name)
		}
		if err != nil {
			return fmt.Errorf("vault: add target %q: %w", spec.Name, err)
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("target.add", "target:"+spec.Name, audit.OutcomeSuccess,
			map[string]string{"kind": spec.Kind, "host": spec.Host, "port": strconv.Itoa(spec.Port)}))
		return err
	})
	if err != nil {
		return Target{}, err
	}
	return Target{Name: spec.Name, Kind: spec.Kind, Host: spec.Host, Port: spec.Port, Options: spec.Options,
		ManagementAccount: spec.ManagementAccount, PasswordPolicy: spec.PasswordPolicy,
		MaxConcurrentRotations: spec.MaxConcurrentRotations, Rules: spec.Rules, CreatedAt: created}, nil
}

const targetColumns = `name, kind, host, port, options, management_account, password_policy, max_concurrent_rotations, created_at, rules`

type scanner interface{ Scan(dest ...any) error }

func scanTarget(s scanner) (Target, error) {
	var t Target
	var opts, pol, rules string
	var created int64
	if err := s.Scan(&t.Name, &t.Kind, &t.Host, &t.Port, &opts, &t.ManagementAccount, &pol, &t.MaxConcurrentRotations, &created, &rules); err != nil {
		return Target{}, err
	}
	if err := json.Unmarshal([]byte(opts), &t.Options); err != nil {
		return Target{}, fmt.Errorf("vault: target %q: options: %w", t.Name, err)
	}
	if len(t.Options) == 0 {
		t.Options = nil
	}
	var err error
	if t.PasswordPolicy, err = decodePolicy(pol); err != nil {
		return Target{}, fmt.Errorf("vault: target %q: %w", t.Name, err)
	}
	if t.Rules, err = decodeRules(rules); err != nil {
		return Target{}, fmt.Errorf("vault: target %q: %w", t.Name, err)
	}
	t.CreatedAt = store.FromMicros(created)
	return t, nil
}

// Targets lists the targets by name.
func (v *Vault) Targets(ctx context.Context) ([]Target, error) {
	rows, err := v.db.QueryContext(ctx, `SELECT `+targetColumns+` FROM vault_targets ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("vault: list targets: %w", err)
	}
	defer rows.Close()
	out := []Target{}
	for rows.Next() {
		t, err := scanTarget(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("vault: list targets: %w", err)
	}
	return out, nil
}

// Target returns the target named name.
func (v *Vault) Target(ctx context.Context, name string) (Target, error) {
	t, err := scanTarget(v.db.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM vault_targets WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Target{}, errkind.New(errkind.NotFound, "vault: no target %q", clip(name))
	}
	if err != nil {
		return Target{}, fmt.Errorf("vault: read target %q: %w", clip(name), err)
	}
	return t, nil
}

// RemoveTarget removes a target that has no accounts; one that has is a
// Conflict.
func (v *Vault) RemoveTarget(ctx context.Context, o audit.Origin, name string) error {
	return v.db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM vault_accounts WHERE target = $1`, name).Scan(&n); err != nil {
			return fmt.Errorf("vault: remove target %q: %w", clip(name), err)
		}
		if n > 0 {
			return errkind.New(errkind.Conflict, "vault: target %q has %d accounts; remove them first", name, n)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM vault_targets WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("vault: remove target %q: %w", clip(name), err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return errkind.New(errkind.NotFound, "vault: no target %q", clip(name))
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("target.remove", "target:"+name, audit.OutcomeSuccess, nil))
		return err
	})
}

// EffectivePolicy returns the password policy of a: its own, else its
// target's (as of when a was read), else the default, with defaults
// filled in.
func (v *Vault) EffectivePolicy(a Account) PasswordPolicy {
	switch {
	case a.PasswordPolicy != nil:
		return a.PasswordPolicy.normal()
	case a.targetPolicy != nil:
		return a.targetPolicy.normal()
	}
	return DefaultPasswordPolicy()
}

func encodePolicy(p *PasswordPolicy) string {
	if p == nil {
		return ""
	}
	b, _ := json.Marshal(p)
	return string(b)
}

func decodePolicy(s string) (*PasswordPolicy, error) {
	if s == "" {
		return nil, nil
	}
	var p PasswordPolicy
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return nil, fmt.Errorf("password policy: %w", err)
	}
	return &p, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
