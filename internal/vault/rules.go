package vault

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
)

// Rule actions: what a gateway does with a command line (SSH) or a
// statement (PostgreSQL) that matches a target's rule.
const (
	RuleAlert = "alert" // audit and note it, let it through
	RuleBlock = "block" // audit and note it, do not send it; the user sees why
)

// Limits on a target's rules.
const (
	maxRules          = 64
	maxRulePattern    = 1024
	maxRuleMessage    = 200
	maxRuleRegexpProg = 4096 // instructions of the compiled pattern
)

// Rule is a command or statement rule of a target: the gateways match
// Pattern (Go regexp syntax, RE2: linear time) against each reconstructed
// command line or normalised statement of the target's sessions. Rules are
// a guard rail against mistakes, not a sandbox: docs/security.md says why.
type Rule struct {
	Pattern string `json:"pattern"`
	Action  string `json:"action"`            // RuleAlert or RuleBlock
	Message string `json:"message,omitempty"` // shown to the user when blocked
}

// Compile returns r's pattern compiled. A pattern whose program exceeds
// 4,096 instructions (x{1000}{1000} and the like) is refused: the gateways
// match every command line and statement against it.
func (r Rule) Compile() (*regexp.Regexp, error) {
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "vault: rule pattern %q: %v", clip(r.Pattern), err)
	}
	parsed, err := syntax.Parse(r.Pattern, syntax.Perl)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "vault: rule pattern %q: %v", clip(r.Pattern), err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil || len(prog.Inst) > maxRuleRegexpProg {
		return nil, errkind.New(errkind.Invalid, "vault: rule pattern %q is too complex (more than %d instructions)", clip(r.Pattern), maxRuleRegexpProg)
	}
	return re, nil
}

// validateRules checks rules: at most 64, each pattern a valid regexp of at
// most 1 KiB, action alert or block, message printable and short.
func validateRules(rules []Rule) error {
	if len(rules) > maxRules {
		return errkind.New(errkind.Invalid, "vault: more than %d rules", maxRules)
	}
	for i, r := range rules {
		n := strconv.Itoa(i + 1)
		switch {
		case strings.TrimSpace(r.Pattern) == "":
			return errkind.New(errkind.Invalid, "vault: rule %s has no pattern", n)
		case len(r.Pattern) > maxRulePattern:
			return errkind.New(errkind.Invalid, "vault: rule %s: pattern is longer than %d bytes", n, maxRulePattern)
		case r.Action != RuleAlert && r.Action != RuleBlock:
			return errkind.New(errkind.Invalid, "vault: rule %s: action %q is not %q or %q", n, clip(r.Action), RuleAlert, RuleBlock)
		case len(r.Message) > maxRuleMessage || strings.ContainsFunc(r.Message, func(c rune) bool { return c < ' ' || c == 0x7f }):
			return errkind.New(errkind.Invalid, "vault: rule %s: message is longer than %d bytes or has control characters", n, maxRuleMessage)
		}
		if _, err := r.Compile(); err != nil {
			return fmt.Errorf("vault: rule %s: %w", n, err)
		}
	}
	return nil
}

func encodeRules(rules []Rule) string {
	if rules == nil {
		rules = []Rule{}
	}
	b, _ := json.Marshal(rules)
	return string(b)
}

func decodeRules(s string) ([]Rule, error) {
	var rules []Rule
	if err := json.Unmarshal([]byte(s), &rules); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if len(rules) == 0 {
		return nil, nil
	}
	return rules, nil
}

// SetTargetRules replaces the rules of the named target, audited as
// "target.rules" with their count and patterns. Sessions opened afterwards
// apply them; sessions already open keep the rules they started with.
func (v *Vault) SetTargetRules(ctx context.Context, o audit.Origin, name string, rules []Rule) (Target, error) {
	if err := validateRules(rules); err != nil {
		return Target{}, err
	}
	patterns, _ := json.Marshal(rules)
	err := v.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vault_targets SET rules = $1 WHERE name = $2`, encodeRules(rules), name)
		if err != nil {
			return fmt.Errorf("vault: set rules of %q: %w", clip(name), err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return errkind.New(errkind.NotFound, "vault: no target %q", clip(name))
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("target.rules", "target:"+name, audit.OutcomeSuccess,
			map[string]string{"count": strconv.Itoa(len(rules)), "rules": string(patterns)}))
		return err
	})
	if err != nil {
		return Target{}, err
	}
	return v.Target(ctx, name)
}
