package main

// The vault as a user drives it: the README's commands through the CLI
// against a dev server and a password-checked PostgreSQL.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/testenv"
)

func TestVaultCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the SCRAM PostgreSQL cluster needs root to start")
	}
	ctx := context.Background()
	pg := testenv.PostgresSCRAM(t)
	mgmtPW := fmt.Sprintf("mgmt-%d", time.Now().UnixNano())
	mgmt := pg.CreateRole(t, mgmtPW, "CREATEROLE")
	app := pg.CreateRole(t, "nobody-knows-this-one", "")
	pg.Exec(t, "GRANT "+app+" TO "+mgmt+" WITH ADMIN OPTION")

	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	env := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem"), "WARDER_TOKEN=" + strings.TrimSpace(string(token))}

	mustOK(t, run(t, env, "", "target", "add", "postgres", "prod-pg", "--host", pg.Host, "--port", fmt.Sprint(pg.Port),
		"--option", "sslmode=disable", "--management-account", mgmt), "target add")
	mustOK(t, run(t, env, mgmtPW+"\n", "account", "add", "prod-pg/"+mgmt, "--password-stdin", "--no-rotate-on-checkin"), "account add mgmt")
	mustOK(t, run(t, env, "", "account", "add", "prod-pg/"+app, "--generate"), "account add --generate")
	ls := mustOK(t, run(t, env, "", "account", "ls", "--format", "json"), "account ls").stdout
	if strings.Contains(ls, mgmtPW) || strings.Contains(ls, `"secret"`) {
		t.Fatalf("account ls shows a credential:\n%s", ls)
	}

	type checkout struct {
		LeaseID   string    `json:"lease_id"`
		ExpiresAt time.Time `json:"expires_at"`
		Password  string    `json:"password"`
	}
	co := decodeJSON[checkout](t, mustOK(t, run(t, env, "", "checkout", "prod-pg/"+app, "--reason", "INC-42 vacuum",
		"--ticket", "INC-42", "--ttl", "1h", "--format", "json"), "checkout").stdout)
	if co.LeaseID == "" || co.Password == "" || co.ExpiresAt.IsZero() {
		t.Fatalf("checkout JSON lacks lease_id, expires_at or password: %+v", co)
	}
	if err := pgLogin(ctx, pg, app, "wrong-"+co.Password); !pgRefused(err) {
		t.Fatalf("wrong password: %v; want refused", err)
	}
	if err := pgLogin(ctx, pg, app, co.Password); err != nil {
		t.Fatalf("the checked-out password does not log in: %v", err)
	}
	// Exclusive: a second check-out is refused, naming the holder.
	if r := run(t, env, "", "checkout", "prod-pg/"+app, "--reason", "again"); r.code == 0 || !strings.Contains(r.stderr, "checked out") {
		t.Errorf("second checkout: exit %d, stderr %q", r.code, r.stderr)
	}
	leases := mustOK(t, run(t, env, "", "checkout", "ls", "--format", "json"), "checkout ls").stdout
	if !strings.Contains(leases, co.LeaseID) {
		t.Errorf("checkout ls does not show the lease:\n%s", leases)
	}
	mustOK(t, run(t, env, "", "checkin", "prod-pg/"+app), "checkin")
	deadline := time.Now().Add(30 * time.Second)
	for pgLogin(ctx, pg, app, co.Password) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the returned password still logs in 30s after check-in")
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustOK(t, run(t, env, "", "account", "rotate", "prod-pg/"+app), "account rotate")
	mustOK(t, run(t, env, "", "account", "verify", "prod-pg/"+app), "account verify")
	// Drift: the password changed behind Warder's back.
	pg.Exec(t, "ALTER ROLE "+app+" PASSWORD 'changed-outside-warder'")
	if r := run(t, env, "", "account", "verify", "prod-pg/"+app); r.code == 0 {
		t.Error("verify passed although the password was changed outside Warder")
	}

	// Application secrets into a command's environment.
	secretFile := filepath.Join(t.TempDir(), "db.env")
	os.WriteFile(secretFile, []byte("DB_PASSWORD=s3cret-value\n"), 0o600)
	mustOK(t, run(t, env, "", "secret", "put", "app/db", "--from-file", secretFile), "secret put")
	got := mustOK(t, run(t, env, "", "secret", "get", "app/db", "--format", "json"), "secret get").stdout
	if !strings.Contains(got, `"DB_PASSWORD": "s3cret-value"`) && !strings.Contains(got, `"DB_PASSWORD":"s3cret-value"`) {
		t.Errorf("secret get: %s", got)
	}
	r := run(t, env, "", "run", "--secret", "app/db", "--", "/bin/sh", "-c", `test "$DB_PASSWORD" = s3cret-value && exit 7`)
	if r.code != 7 || strings.Contains(r.stdout+r.stderr, "s3cret-value") {
		t.Errorf("warder run: exit %d (want 7), output %q", r.code, r.stdout+r.stderr)
	}
}
