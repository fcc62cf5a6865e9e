package main

// Break-glass and access reviews through the CLI.

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBreakGlassAndReviewsCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	base := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem")}
	admin := append(base[:2:2], "WARDER_TOKEN="+strings.TrimSpace(string(token)))
	as := func(user string) []string {
		env := append(base[:2:2], "WARDER_CONFIG_DIR="+filepath.Join(t.TempDir(), user))
		mustOK(t, run(t, admin, user+"-long-passphrase\n", "user", "create", user, "--password-stdin"), "create "+user)
		mustOK(t, run(t, env, user+"-long-passphrase\n", "login", "--user", user, "--password-stdin"), "login "+user)
		return env
	}
	mustOK(t, run(t, admin, "", "group", "create", "oncall-leads"), "group")
	alice, bob := as("alice"), as("bob")
	mustOK(t, run(t, admin, "", "group", "add-member", "oncall-leads", "--user", "bob"), "add bob")

	policy := filepath.Join(t.TempDir(), "root.cedar")
	os.WriteFile(policy, []byte(`permit(principal == ?principal, action == Action::"connect", resource in Target::"prod");`), 0o600)
	mustOK(t, run(t, admin, "", "role", "create", "prod-root", "--policy", policy, "--break-glass"), "role create")
	// Dual control: one approval is not enough for a break-glass role.
	if r := run(t, admin, "", "role", "eligible", "prod-root", "--user", "alice", "--approvals", "1", "--approver-group", "oncall-leads"); r.code == 0 {
		t.Fatal("a break-glass role accepted a single approval")
	}
	mustOK(t, run(t, admin, "", "role", "eligible", "prod-root", "--user", "alice", "--approvals", "2",
		"--approver-group", "oncall-leads", "--max-ttl", "1h", "--allow-emergency"), "eligible")

	type request struct {
		ID        string `json:"id"`
		Status    string `json:"status"`
		GrantID   string `json:"grant_id"`
		Emergency bool   `json:"emergency"`
	}
	req := decodeJSON[request](t, mustOK(t, run(t, alice, "", "request", "create", "--role", "prod-root", "--ttl", "30m",
		"--reason", "database down", "--emergency", "--format", "json"), "emergency request").stdout)
	if !req.Emergency || req.GrantID == "" {
		t.Fatalf("emergency request = %+v; want an immediate grant", req)
	}
	evs := mustOK(t, run(t, admin, "", "audit", "ls", "--action", "access.breakglass.emergency", "--format", "json"), "audit").stdout
	if !strings.Contains(evs, `"severity": "high"`) && !strings.Contains(evs, `"severity":"high"`) {
		t.Errorf("no high-severity emergency audit event: %s", evs)
	}
	type incident struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	ins := decodeJSON[[]incident](t, mustOK(t, run(t, bob, "", "incident", "ls", "--open", "--format", "json"), "incident ls").stdout)
	if len(ins) != 1 || ins[0].Status != "open" {
		t.Fatalf("bob's open incidents = %+v, want one", ins)
	}
	mustOK(t, run(t, admin, "", "grant", "revoke", req.GrantID, "--reason", "incident over"), "revoke")
	if r := run(t, alice, "", "incident", "review", ins[0].ID, "--notes", "all good"); r.code == 0 {
		t.Error("the grantee closed her own incident review")
	}
	mustOK(t, run(t, bob, "", "incident", "review", ins[0].ID, "--notes", "root cause: disk full"), "incident review")

	// An access review of the role: bob revokes alice's eligibility.
	type campaign struct {
		ID    string `json:"id"`
		Items []struct {
			ID      string `json:"id"`
			Kind    string `json:"kind"`
			Subject string `json:"subject"`
		} `json:"items"`
	}
	camp := decodeJSON[campaign](t, mustOK(t, run(t, admin, "", "review", "start", "--scope", "role", "--target", "prod-root",
		"--period", "7d", "--reviewer", "oncall-leads", "--format", "json"), "review start").stdout)
	var item string
	for _, it := range camp.Items {
		if it.Kind == "eligibility" && strings.Contains(it.Subject, "alice") {
			item = it.ID
		}
	}
	if item == "" {
		t.Fatalf("campaign lists no eligibility of alice: %+v", camp)
	}
	if r := run(t, alice, "", "review", "decide", camp.ID, item, "keep"); r.code == 0 {
		t.Error("alice reviewed her own access")
	}
	mustOK(t, run(t, bob, "", "review", "decide", camp.ID, item, "revoke", "--comment", "no longer on call"), "decide")
	if r := run(t, alice, "", "request", "create", "--role", "prod-root", "--ttl", "10m", "--reason", "again", "--emergency"); r.code == 0 {
		t.Error("alice could still request the role after her eligibility was revoked")
	}
	out := mustOK(t, run(t, bob, "", "review", "report", camp.ID, "--format", "csv"), "report csv").stdout
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != len(camp.Items)+1 {
		t.Fatalf("CSV report: %d rows, %v; want a header and %d items", len(rows), err, len(camp.Items))
	}
}
