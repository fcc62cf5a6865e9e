package access

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// Subject is who an eligibility is for.
type Subject struct {
	Kind string `json:"kind"` // SubjectUser or SubjectGroup
	Name string `json:"name"`
}

// The subject kinds.
const (
	SubjectUser  = "user"  // one user
	SubjectGroup = "group" // every member of the group, directly or through nested groups
)

func (s Subject) String() string { return s.Kind + ":" + s.Name }

// MarshalJSON writes MaxTTL as a duration string ("8h0m0s").
func (e Eligibility) MarshalJSON() ([]byte, error) {
	type plain Eligibility
	return json.Marshal(struct {
		plain
		MaxTTL string `json:"max_ttl"`
	}{plain(e), e.MaxTTL.String()})
}

// Eligibility lets a subject request a role, on terms.
type Eligibility struct {
	Role    string  `json:"role"`
	Subject Subject `json:"subject"`
	// Approvals is how many distinct members of ApproverGroup must
	// approve, 0 to 10; 0 means self-activation.
	Approvals int `json:"approvals"`
	// ApproverGroup is the group whose members approve; required when
	// Approvals > 0, "" otherwise.
	ApproverGroup string `json:"approver_group,omitempty"`
	// MaxTTL bounds a grant's duration. Required; at most 30 days.
	MaxTTL time.Duration `json:"max_ttl"`
	// RequireTicket is a regular expression (RE2) the whole ticket id must
	// match, e.g. "INC-[0-9]+". "": no ticket needed.
	RequireTicket string `json:"require_ticket,omitempty"`
	// ReasonOptional lets a request go without a reason. False (the
	// default): a reason is required.
	ReasonOptional bool `json:"reason_optional"`
	// RequireMFA requires the requester, and each approver, to have
	// presented a second factor recently (Config.MFAMaxAge).
	RequireMFA bool `json:"require_mfa"`
	// AllowEmergency lets the subject open a break-glass role at once, as
	// an emergency (RequestSpec.Emergency), without approvals. Only for
	// break-glass roles. False (the default): never.
	AllowEmergency bool      `json:"allow_emergency"`
	CreatedAt      time.Time `json:"created_at"`
}

// Bounds of an eligibility.
const (
	MaxApprovals = 10
	MaxTTL       = 30 * 24 * time.Hour
)

func (e Eligibility) check() error {
	switch {
	case e.Subject.Kind != SubjectUser && e.Subject.Kind != SubjectGroup:
		return errkind.New(errkind.Invalid, "access: an eligibility's subject is a user or a group")
	case !namePattern.MatchString(e.Subject.Name):
		return errkind.New(errkind.Invalid, "access: subject name %q is not a valid name", clip(e.Subject.Name))
	case e.Approvals < 0 || e.Approvals > MaxApprovals:
		return errkind.New(errkind.Invalid, "access: approvals must be 0 to %d", MaxApprovals)
	case e.Approvals > 0 && !namePattern.MatchString(e.ApproverGroup):
		return errkind.New(errkind.Invalid, "access: approvals need an approver group")
	case e.Approvals == 0 && e.ApproverGroup != "":
		return errkind.New(errkind.Invalid, "access: an approver group needs approvals > 0")
	case e.MaxTTL <= 0 || e.MaxTTL > MaxTTL:
		return errkind.New(errkind.Invalid, "access: max TTL must be positive and at most %s", MaxTTL)
	case len(e.RequireTicket) > 256:
		return errkind.New(errkind.Invalid, "access: ticket pattern longer than 256 bytes")
	}
	if _, err := ticketPattern(e.RequireTicket); err != nil {
		return err
	}
	return nil
}

// ticketPattern compiles p to match whole tickets; nil for "".
func ticketPattern(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	re, err := regexp.Compile(`^(?:` + p + `)$`)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "access: ticket pattern: %v", err)
	}
	return re, nil
}

// SetEligibility stores e, replacing the eligibility of e.Subject for
// e.Role, audited "access.eligibility.set". The role must exist
// (errkind.NotFound). For a break-glass role e needs at least two
// approvals (errkind.Invalid, ErrDualControl); AllowEmergency is for
// break-glass roles only (errkind.Invalid). Pending requests keep the
// terms they were made on.
func (a *Access) SetEligibility(ctx context.Context, o audit.Origin, e Eligibility) (Eligibility, error) {
	if err := e.check(); err != nil {
		return Eligibility{}, err
	}
	var us int64
	e.CreatedAt, us = a.nowMicros()
	err := a.inTx(ctx, func(tx *txn) error {
		role, err := roleTx(ctx, tx, e.Role)
		if err != nil {
			return err
		}
		if role.BreakGlass && e.Approvals < 2 {
			return errkind.New(errkind.Invalid, "%w (role %q; dual control)", ErrDualControl, role.Name)
		}
		if e.AllowEmergency && !role.BreakGlass {
			return errkind.New(errkind.Invalid, "access: emergency use is for break-glass roles; %q is not one", role.Name)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO access_eligibility (role, subject_kind, subject_name, approvals, approver_group,
				max_ttl, require_ticket, reason_optional, require_mfa, allow_emergency, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (role, subject_kind, subject_name) DO UPDATE SET approvals = excluded.approvals,
				approver_group = excluded.approver_group, max_ttl = excluded.max_ttl, require_ticket = excluded.require_ticket,
				reason_optional = excluded.reason_optional, require_mfa = excluded.require_mfa,
				allow_emergency = excluded.allow_emergency, created_at = excluded.created_at`,
			e.Role, e.Subject.Kind, e.Subject.Name, e.Approvals, e.ApproverGroup, e.MaxTTL.Microseconds(),
			e.RequireTicket, e.ReasonOptional, e.RequireMFA, e.AllowEmergency, us)
		if err != nil {
			return fmt.Errorf("access: store eligibility: %w", err)
		}
		return a.appendTx(ctx, tx, o.Event("access.eligibility.set", e.Role, audit.OutcomeSuccess, map[string]string{
			"subject": e.Subject.String(), "approvals": fmt.Sprint(e.Approvals), "approver_group": e.ApproverGroup,
			"max_ttl": e.MaxTTL.String(), "require_ticket": e.RequireTicket,
			"reason_optional": fmt.Sprint(e.ReasonOptional), "require_mfa": fmt.Sprint(e.RequireMFA),
			"allow_emergency": fmt.Sprint(e.AllowEmergency),
		}))
	})
	if err != nil {
		return Eligibility{}, err
	}
	return e, nil
}

// ListEligibility returns the eligibilities of role, or of every role for
// "", ordered by role, subject kind and name.
func (a *Access) ListEligibility(ctx context.Context, role string) ([]Eligibility, error) {
	return listEligibility(ctx, a.db, role)
}

func listEligibility(ctx context.Context, db querier, role string) ([]Eligibility, error) {
	q := `SELECT role, subject_kind, subject_name, approvals, approver_group, max_ttl, require_ticket,
		reason_optional, require_mfa, allow_emergency, created_at FROM access_eligibility`
	var args []any
	if role != "" {
		q += ` WHERE role = $1`
		args = append(args, role)
	}
	rows, err := db.QueryContext(ctx, q+` ORDER BY role, subject_kind DESC, subject_name`, args...)
	if err != nil {
		return nil, fmt.Errorf("access: read eligibility: %w", err)
	}
	defer rows.Close()
	out := []Eligibility{}
	for rows.Next() {
		var e Eligibility
		var ttl, created int64
		if err := rows.Scan(&e.Role, &e.Subject.Kind, &e.Subject.Name, &e.Approvals, &e.ApproverGroup, &ttl,
			&e.RequireTicket, &e.ReasonOptional, &e.RequireMFA, &e.AllowEmergency, &created); err != nil {
			return nil, fmt.Errorf("access: read eligibility: %w", err)
		}
		e.MaxTTL, e.CreatedAt = time.Duration(ttl)*time.Microsecond, store.FromMicros(created)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("access: read eligibility: %w", err)
	}
	return out, nil
}

// RemoveEligibility removes the eligibility of s for role, audited
// "access.eligibility.remove"; errkind.NotFound if there is none. Pending
// requests made under it stay; live grants stay (revoke them).
func (a *Access) RemoveEligibility(ctx context.Context, o audit.Origin, role string, s Subject) error {
	return a.inTx(ctx, func(tx *txn) error { return a.removeEligibilityTx(ctx, tx, o, role, s, nil) })
}

// removeEligibilityTx is RemoveEligibility in tx, with details added to
// its audit event.
func (a *Access) removeEligibilityTx(ctx context.Context, tx *txn, o audit.Origin, role string, s Subject, details map[string]string) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM access_eligibility WHERE role = $1 AND subject_kind = $2 AND subject_name = $3`,
		role, s.Kind, s.Name)
	if err != nil {
		return fmt.Errorf("access: remove eligibility: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errkind.New(errkind.NotFound, "access: %s is not eligible for role %q", clip(s.String()), clip(role))
	}
	if details == nil {
		details = map[string]string{}
	}
	details["subject"] = s.String()
	return a.appendTx(ctx, tx, o.Event("access.eligibility.remove", role, audit.OutcomeSuccess, details))
}

// choose returns the eligibility a request by p for role is made under:
// of those that match p and whose terms spec meets, the one needing the
// fewest approvals, then p's own, then by group name. With none matching
// p it is ErrNotEligible; with none met, the error of the first. For a
// break-glass role only eligibilities with two approvals or more match
// (older ones may have fewer); for an emergency, only those allowing it
// (ErrNoEmergency when none does).
func (a *Access) choose(ctx context.Context, p identity.Principal, role Role, spec RequestSpec, now time.Time) (Eligibility, error) {
	all, err := a.ListEligibility(ctx, role.Name)
	if err != nil {
		return Eligibility{}, err
	}
	groups, err := a.groupsOf(ctx, string(p.Kind), p.Name)
	if err != nil {
		return Eligibility{}, err
	}
	var match []Eligibility
	for _, e := range all {
		if (e.Subject.Kind == SubjectUser && p.Kind == identity.KindUser && e.Subject.Name == p.Name) ||
			(e.Subject.Kind == SubjectGroup && groups[e.Subject.Name]) {
			match = append(match, e)
		}
	}
	if len(match) == 0 {
		return Eligibility{}, errkind.New(errkind.Denied, "%w: %s for role %q", ErrNotEligible, p.Actor(), clip(role.Name))
	}
	match = slices.DeleteFunc(match, func(e Eligibility) bool {
		return role.BreakGlass && e.Approvals < 2 || spec.Emergency && !e.AllowEmergency
	})
	if len(match) == 0 && spec.Emergency {
		return Eligibility{}, errkind.New(errkind.Denied, "%w: %s for role %q", ErrNoEmergency, p.Actor(), clip(role.Name))
	}
	if len(match) == 0 {
		return Eligibility{}, errkind.New(errkind.Denied, "%w: %s for role %q (break-glass: two approvals or more)",
			ErrNotEligible, p.Actor(), clip(role.Name))
	}
	sort.SliceStable(match, func(i, j int) bool {
		if match[i].Approvals != match[j].Approvals {
			return match[i].Approvals < match[j].Approvals
		}
		if match[i].Subject.Kind != match[j].Subject.Kind {
			return match[i].Subject.Kind == SubjectUser
		}
		return match[i].Subject.Name < match[j].Subject.Name
	})
	var first error
	for _, e := range match {
		err := a.meets(e, spec, now)
		if err == nil {
			return e, nil
		}
		if first == nil {
			first = err
		}
	}
	return Eligibility{}, first
}

// meets reports whether spec meets e's terms at now.
func (a *Access) meets(e Eligibility, spec RequestSpec, now time.Time) error {
	if spec.TTL > e.MaxTTL {
		return errkind.New(errkind.Invalid, "access: TTL %s is longer than the %s allowed", spec.TTL, e.MaxTTL)
	}
	re, err := ticketPattern(e.RequireTicket)
	if err != nil {
		return err
	}
	if re != nil && !re.MatchString(spec.Ticket) {
		return errkind.New(errkind.Invalid, "access: a ticket id matching %s is required", e.RequireTicket)
	}
	if !e.ReasonOptional && strings.TrimSpace(spec.Reason) == "" {
		return errkind.New(errkind.Invalid, "access: a reason is required")
	}
	if e.RequireMFA && !a.freshMFA(spec.MFA, spec.MFAAt, now) {
		return errkind.New(errkind.Denied, "%w (within %s)", ErrMFARequired, a.mfaAge)
	}
	return nil
}

// freshMFA reports whether a second factor presented at at is recent
// enough at now.
func (a *Access) freshMFA(mfa bool, at, now time.Time) bool {
	return mfa && !at.IsZero() && !at.After(now.Add(time.Minute)) && now.Sub(at) <= a.mfaAge
}
