package main

// Target rules as an administrator manages them through the CLI.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTargetRulesCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	env := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem"), "WARDER_TOKEN=" + strings.TrimSpace(string(token))}

	mustOK(t, run(t, env, "", "target", "add", "postgres", "pg1", "--host", "127.0.0.1", "--port", "5432"), "target add")
	mustOK(t, run(t, env, "", "target", "rule", "add", "pg1", "--pattern", `(?i)\bdrop\s+database\b`, "--message", "ask the lead"), "rule add block")
	mustOK(t, run(t, env, "", "target", "rule", "add", "pg1", "--pattern", `(?i)^alter role`, "--action", "alert"), "rule add alert")
	if r := run(t, env, "", "target", "rule", "add", "pg1", "--pattern", `(unclosed`); r.code == 0 || !strings.Contains(r.stderr, "pattern") {
		t.Errorf("a bad pattern: exit %d, stderr %q; want refused naming the pattern", r.code, r.stderr)
	}
	if r := run(t, env, "", "target", "rule", "add", "pg1", "--pattern", `x`, "--action", "kill"); r.code == 0 || !strings.Contains(r.stderr, "action") {
		t.Errorf("a bad action: exit %d, stderr %q", r.code, r.stderr)
	}
	type rule struct{ Pattern, Action, Message string }
	rules := decodeJSON[[]rule](t, mustOK(t, run(t, env, "", "target", "rule", "ls", "pg1", "--format", "json"), "rule ls").stdout)
	if len(rules) != 2 || rules[0].Action != "block" || rules[0].Message != "ask the lead" || rules[1].Action != "alert" {
		t.Fatalf("rule ls = %+v", rules)
	}
	mustOK(t, run(t, env, "", "target", "rule", "rm", "pg1", "1"), "rule rm")
	if r := run(t, env, "", "target", "rule", "rm", "pg1", "5"); r.code == 0 {
		t.Errorf("removing rule 5 of 1 succeeded")
	}
	rules = decodeJSON[[]rule](t, mustOK(t, run(t, env, "", "target", "rule", "ls", "pg1", "--format", "json"), "rule ls").stdout)
	if len(rules) != 1 || rules[0].Pattern != `(?i)^alter role` {
		t.Fatalf("after rm: %+v", rules)
	}
	audit := mustOK(t, run(t, env, "", "audit", "export"), "audit export").stdout
	if strings.Count(audit, `"target.rules"`) != 3 {
		t.Errorf("audit has %d target.rules events; want 3", strings.Count(audit, `"target.rules"`))
	}
}
