package ssh

import (
	"fmt"
	"regexp"
	"strings"
)

// RuleAction is what a matching command rule does.
type RuleAction string

// The rule actions.
const (
	ActionAlert RuleAction = "alert" // audit and note the command, let it run
	ActionBlock RuleAction = "block" // audit and note the command, do not send it
)

// Rule is a command rule of a target: a regular expression matched against
// each reconstructed command line (and each exec command). The Resolver
// returns a target's rules with its Upstream; a connection applies the
// rules it started with.
type Rule struct {
	Pattern *regexp.Regexp
	Action  RuleAction
	// Message is told to the user, after the rule, when the rule blocks
	// a command. Control characters are replaced. Empty: none.
	Message string
}

// checkRules reports the first rule of rules that cannot be applied: a
// connection with such a rule is refused rather than run unguarded.
func checkRules(rules []Rule) error {
	for i, r := range rules {
		if r.Pattern == nil {
			return fmt.Errorf("command rule %d has no pattern", i+1)
		}
		if r.Action != ActionAlert && r.Action != ActionBlock {
			return fmt.Errorf("command rule %d: action %q, want alert or block", i+1, clip(string(r.Action), 16))
		}
	}
	return nil
}

// blockedMessage is what the user is told of a command r blocked,
// without line ends.
func blockedMessage(r Rule) string {
	msg := fmt.Sprintf("warder: command blocked by rule %q", r.Pattern.String())
	if m := cleanMessage(r.Message); m != "" {
		msg += ": " + m
	}
	return msg
}

// cleanMessage makes a rule's message safe to print on the user's
// terminal: control characters (escape sequences) become spaces, and it
// is at most 200 bytes.
func cleanMessage(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(msg, "?"))
	return strings.ToValidUTF8(clip(strings.TrimSpace(msg), 200), "")
}
