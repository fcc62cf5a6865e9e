package server

import (
	"testing"

	sshgw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/vault"
)

func TestSSHRules(t *testing.T) {
	got, err := sshRules("web1", []vault.Rule{
		{Pattern: `^rm -rf /`, Action: vault.RuleBlock, Message: "ask the lead"},
		{Pattern: `(?i)^sudo`, Action: vault.RuleAlert},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Action != sshgw.ActionBlock || got[0].Message != "ask the lead" || !got[0].Pattern.MatchString("rm -rf / --no-preserve-root") ||
		got[1].Action != sshgw.ActionAlert || !got[1].Pattern.MatchString("SUDO su") || got[1].Pattern.MatchString("echo sudo") {
		t.Errorf("sshRules = %+v", got)
	}
	if got, err := sshRules("web1", nil); err != nil || got != nil {
		t.Errorf("no rules: %v, %v", got, err)
	}
	for _, bad := range []vault.Rule{{Pattern: `(`, Action: vault.RuleBlock}, {Pattern: `x`, Action: "kill"}} {
		if _, err := sshRules("web1", []vault.Rule{bad}); err == nil {
			t.Errorf("sshRules accepted %+v", bad)
		}
	}
}
