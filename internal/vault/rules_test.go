package vault

import (
	"slices"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

func TestTargetRules(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		v := e.vault
		block := Rule{Pattern: `(?i)\bdrop\s+database\b`, Action: RuleBlock, Message: "ask the DBA lead"}
		alert := Rule{Pattern: `(?i)^alter role`, Action: RuleAlert}
		tg, err := v.AddTarget(e.ctx, admin, TargetSpec{Name: "pg1", Kind: "postgres", Host: "127.0.0.1", Port: 5432,
			Rules: []Rule{block}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tg.Rules, []Rule{block}) {
			t.Errorf("AddTarget rules = %+v", tg.Rules)
		}
		got, err := v.Target(e.ctx, "pg1")
		if err != nil || !slices.Equal(got.Rules, []Rule{block}) {
			t.Fatalf("Target = %+v, %v", got.Rules, err)
		}

		got, err = v.SetTargetRules(e.ctx, admin, "pg1", []Rule{alert, block})
		if err != nil || !slices.Equal(got.Rules, []Rule{alert, block}) {
			t.Fatalf("SetTargetRules = %+v, %v", got.Rules, err)
		}
		evs := e.eventsOf(t, "target.rules")
		if len(evs) != 1 || evs[0].Details["count"] != "2" || !strings.Contains(evs[0].Details["rules"], "alter role") {
			t.Errorf("target.rules events = %+v", evs)
		}
		got, err = v.SetTargetRules(e.ctx, admin, "pg1", nil)
		if err != nil || got.Rules != nil {
			t.Fatalf("clearing rules = %+v, %v", got.Rules, err)
		}

		many := make([]Rule, maxRules+1)
		for i := range many {
			many[i] = alert
		}
		for _, tc := range []struct {
			name  string
			rules []Rule
		}{
			{"bad regexp", []Rule{{Pattern: `(unclosed`, Action: RuleBlock}}},
			{"empty pattern", []Rule{{Pattern: " ", Action: RuleBlock}}},
			{"bad action", []Rule{{Pattern: `x`, Action: "kill"}}},
			{"long pattern", []Rule{{Pattern: strings.Repeat("a", maxRulePattern+1), Action: RuleAlert}}},
			{"control in message", []Rule{{Pattern: `x`, Action: RuleBlock, Message: "a\x1b[2Jb"}}},
			{"too many", many},
			{"too complex", []Rule{{Pattern: `(a{100}){100}`, Action: RuleAlert}}},
		} {
			_, err := v.SetTargetRules(e.ctx, admin, "pg1", tc.rules)
			wantKind(t, tc.name, err, errkind.Invalid)
			_, err = v.AddTarget(e.ctx, admin, TargetSpec{Name: "pg2", Kind: "postgres", Host: "h", Port: 1, Rules: tc.rules})
			wantKind(t, tc.name+" at add", err, errkind.Invalid)
		}
		_, err = v.SetTargetRules(e.ctx, admin, "nope", []Rule{alert})
		wantKind(t, "unknown target", err, errkind.NotFound)
		if got, _ := v.Target(e.ctx, "pg1"); got.Rules != nil {
			t.Errorf("refused updates changed the rules: %+v", got.Rules)
		}
	})
}
