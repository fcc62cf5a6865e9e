package main

// The README's just-in-time example, end to end through the CLI: alice
// requests prod-dba for a short time with ticket INC-42, bob approves,
// alice gets an ephemeral PostgreSQL user and connects with it, the grant
// expires, and alice is refused.

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/warderhq/warder/internal/testenv"
)

func TestJITEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the SCRAM PostgreSQL cluster needs root to start")
	}
	pg := testenv.PostgresSCRAM(t)
	// The management account Warder creates ephemeral users with, and the
	// database role a grant of prod-dba confers.
	mgmtPW := "mgmt-" + fmt.Sprint(time.Now().UnixNano())
	mgmt := pg.CreateRole(t, mgmtPW, "CREATEROLE")
	readRole := "wt_read_" + fmt.Sprint(time.Now().UnixNano()%1e9)
	pg.Exec(t, "CREATE ROLE "+readRole+" NOLOGIN")
	pg.Exec(t, "GRANT "+readRole+" TO "+mgmt+" WITH ADMIN OPTION")
	t.Cleanup(func() { pg.Exec(t, "DROP ROLE IF EXISTS "+readRole) })

	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	base := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem")}
	admin := append(base[:2:2], "WARDER_TOKEN="+strings.TrimSpace(string(token)))
	as := func(user string) []string { // a CLI environment with its own token file
		return append(base[:2:2], "WARDER_CONFIG_DIR="+filepath.Join(t.TempDir(), user))
	}
	alice, bob := as("alice"), as("bob")

	mustOK(t, run(t, admin, "alice-long-passphrase\n", "user", "create", "alice", "--password-stdin"), "create alice")
	mustOK(t, run(t, admin, "bob-long-passphrase-x\n", "user", "create", "bob", "--password-stdin"), "create bob")
	mustOK(t, run(t, admin, "", "group", "create", "dba-approvers"), "group")
	mustOK(t, run(t, admin, "", "group", "add-member", "dba-approvers", "--user", "bob"), "add bob")
	mustOK(t, run(t, admin, "", "target", "add", "postgres", "prod-pg", "--host", pg.Host, "--port", fmt.Sprint(pg.Port),
		"--option", "sslmode=disable", "--management-account", mgmt), "target add")
	mustOK(t, run(t, admin, mgmtPW+"\n", "account", "add", "prod-pg/"+mgmt, "--password-stdin"), "account add mgmt")
	policy := filepath.Join(t.TempDir(), "prod-dba.cedar")
	os.WriteFile(policy, []byte(`permit(principal == ?principal, action == Action::"connect", resource in Target::"prod-pg");`), 0o600)
	mustOK(t, run(t, admin, "", "role", "create", "prod-dba", "--policy", policy,
		"--ephemeral-target", "prod-pg", "--ephemeral-role", readRole), "role create")
	mustOK(t, run(t, admin, "", "role", "eligible", "prod-dba", "--user", "alice", "--approvals", "1",
		"--approver-group", "dba-approvers", "--max-ttl", "1h", "--require-ticket", "^INC-[0-9]+$"), "eligible")

	mustOK(t, run(t, alice, "alice-long-passphrase\n", "login", "--user", "alice", "--password-stdin"), "alice login")
	mustOK(t, run(t, bob, "bob-long-passphrase-x\n", "login", "--user", "bob", "--password-stdin"), "bob login")

	check := func(env []string) string {
		return run(t, env, "", "policy", "check", "--principal", `User::"alice"`, "--action", "connect",
			"--resource", `Target::"prod-pg"`, "--format", "json").stdout
	}
	if !strings.Contains(check(admin), `"deny"`) {
		t.Fatal("alice may connect before any grant")
	}
	// A ticket that does not match the pattern is refused.
	if r := run(t, alice, "", "request", "create", "--role", "prod-dba", "--ttl", "5s", "--reason", "vacuum", "--ticket", "CHG-1"); r.code == 0 {
		t.Fatal("a request with a ticket not matching ^INC-[0-9]+$ was accepted")
	}
	type request struct {
		ID      string `json:"id"`
		Status  string `json:"status"`
		GrantID string `json:"grant_id"`
	}
	req := decodeJSON[request](t, mustOK(t, run(t, alice, "", "request", "create", "--role", "prod-dba", "--ttl", "6s",
		"--reason", "vacuum", "--ticket", "INC-42", "--format", "json"), "request").stdout)
	if req.ID == "" || req.Status != "pending" {
		t.Fatalf("request = %+v, want a pending request", req)
	}
	if r := run(t, alice, "", "request", "approve", req.ID); r.code == 0 {
		t.Fatal("alice approved her own request")
	}
	req = decodeJSON[request](t, mustOK(t, run(t, bob, "", "request", "approve", req.ID, "--format", "json"), "approve").stdout)
	if req.Status != "approved" || req.GrantID == "" {
		t.Fatalf("after bob's approval: %+v", req)
	}
	if !strings.Contains(check(admin), `"allow"`) {
		t.Fatal("alice may not connect during her grant")
	}

	// alice connects with her ephemeral user: it can read what the role
	// grants.
	type cred struct {
		Host     string `json:"host"`
		Port     int    `json:"port"`
		Username string `json:"username"`
		Password string `json:"password"`
	}
	c := decodeJSON[cred](t, mustOK(t, run(t, alice, "", "grant", "credential", req.GrantID, "--format", "json"), "credential").stdout)
	dsn := fmt.Sprintf("postgres://%s:%s@%s:%d/postgres?sslmode=disable", url.PathEscape(c.Username), url.QueryEscape(c.Password), c.Host, c.Port)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var member bool
	if err := db.QueryRow(`SELECT pg_has_role(current_user, $1, 'MEMBER')`, readRole).Scan(&member); err != nil || !member {
		t.Fatalf("ephemeral user logged in: member of %s = %v, %v", readRole, member, err)
	}
	db.Close()
	if r := run(t, bob, "", "grant", "credential", req.GrantID); r.code == 0 {
		t.Error("bob read alice's ephemeral credential")
	}

	// The grant expires: alice is refused at once, and her database user
	// is dropped by the sweep.
	time.Sleep(7 * time.Second)
	if !strings.Contains(check(admin), `"deny"`) {
		t.Fatal("alice may still connect after her grant expired")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, _ := sql.Open("pgx", dsn)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := db.PingContext(ctx)
		cancel()
		db.Close()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ephemeral user still logs in 30s after the grant expired")
		}
		time.Sleep(time.Second)
	}
	evs := mustOK(t, run(t, admin, "", "audit", "ls", "--action", "access.grant.expire", "--format", "json"), "audit").stdout
	if !strings.Contains(evs, "access.grant.expire") {
		t.Error("no access.grant.expire audit event")
	}
}
