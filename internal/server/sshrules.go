package server

import (
	"fmt"

	sshgw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/vault"
)

// sshRules compiles a target's rules for the SSH gateway. A rule that does
// not compile (the vault validates them when they are set, so only a
// damaged row) fails the connection rather than letting it run unguarded.
func sshRules(target string, rules []vault.Rule) ([]sshgw.Rule, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	out := make([]sshgw.Rule, 0, len(rules))
	for i, r := range rules {
		re, err := r.Compile()
		if err != nil {
			return nil, fmt.Errorf("server: target %q: rule %d: %w", target, i+1, err)
		}
		var action sshgw.RuleAction
		switch r.Action {
		case vault.RuleAlert:
			action = sshgw.ActionAlert
		case vault.RuleBlock:
			action = sshgw.ActionBlock
		default:
			return nil, fmt.Errorf("server: target %q: rule %d: unknown action %q", target, i+1, r.Action)
		}
		out = append(out, sshgw.Rule{Pattern: re, Action: action, Message: r.Message})
	}
	return out, nil
}
