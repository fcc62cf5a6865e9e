package main

// End-to-end tests of what a walk through the README found missing or
// wrong: the administrator's machine and user commands (secret ids,
// disable/enable/rm, unlock, set-password), a TOTP code used twice, and
// the hints of listings a non-administrator may not see in full.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMachineAdminCommands(t *testing.T) {
	admin, _ := devEnv(t)
	type machine struct {
		Name      string `json:"name"`
		Status    string `json:"status"`
		RoleID    string `json:"role_id"`
		SecretIDs []struct {
			ID       string `json:"id"`
			Uses     int    `json:"uses"`
			UsesLeft int    `json:"uses_left"`
		} `json:"secret_ids"`
	}
	type issued struct {
		SecretID string `json:"secret_id"`
		Info     struct {
			ID string `json:"id"`
		} `json:"info"`
	}
	m := decodeJSON[machine](t, mustOK(t, run(t, admin, "", "machine", "create", "ci", "--format", "json"), "machine create").stdout)
	var sids []issued
	for range 3 {
		sids = append(sids, decodeJSON[issued](t, mustOK(t, run(t, admin, "", "machine", "issue-secret", "ci", "--uses", "5", "--format", "json"), "issue-secret").stdout))
	}
	login := func(sid string) result {
		return run(t, admin[:2:2], sid+"\n", "machine", "login", "--role-id", m.RoleID)
	}
	show := mustOK(t, run(t, admin, "", "machine", "show", "ci", "--format", "json"), "machine show")
	got := decodeJSON[machine](t, show.stdout)
	if got.Status != "active" || len(got.SecretIDs) != 3 || got.SecretIDs[0].ID != sids[0].Info.ID || got.SecretIDs[0].UsesLeft != 5 {
		t.Errorf("machine show = %+v", got)
	}
	for _, s := range sids {
		if strings.Contains(show.stdout, s.SecretID) {
			t.Fatal("machine show prints a secret id")
		}
	}
	if r := mustOK(t, run(t, admin, "", "machine", "show", "ci"), "machine show table"); !strings.Contains(r.stdout, sids[1].Info.ID) || !strings.Contains(r.stdout, "5 of 5") {
		t.Errorf("machine show table:\n%s", r.stdout)
	}

	// Revoke one secret id by its accessor; the secret id itself is refused.
	r := run(t, admin, "", "machine", "revoke-secret", "ci", sids[0].SecretID)
	if r.code != 2 || strings.Contains(r.stderr, sids[0].SecretID[len(sids[0].SecretID)-43:]) || !strings.Contains(r.stderr, sids[0].Info.ID) {
		t.Errorf("revoke-secret with the secret id: exit %d, stderr %q", r.code, r.stderr)
	}
	mustOK(t, run(t, admin, "", "machine", "revoke-secret", "ci", sids[0].Info.ID), "revoke-secret")
	if r := login(sids[0].SecretID); r.code == 0 {
		t.Error("a revoked secret id still logs in")
	}
	tok := strings.TrimSpace(mustOK(t, login(sids[1].SecretID), "machine login").stdout)
	machineEnv := append(admin[:2:2], "WARDER_TOKEN="+tok)
	mustOK(t, run(t, machineEnv, "", "whoami"), "whoami as the machine")

	// Disable revokes its tokens and refuses its logins; enable undoes that.
	if d := decodeJSON[machine](t, mustOK(t, run(t, admin, "", "machine", "disable", "ci", "--format", "json"), "disable").stdout); d.Status != "disabled" {
		t.Errorf("machine disable = %+v", d)
	}
	if r := run(t, machineEnv, "", "whoami"); r.code == 0 {
		t.Error("a disabled machine's token still works")
	}
	if r := login(sids[1].SecretID); r.code == 0 {
		t.Error("a disabled machine logs in")
	}
	if r := mustOK(t, run(t, admin, "", "machine", "ls"), "machine ls"); !strings.Contains(r.stdout, "disabled") {
		t.Errorf("machine ls does not show the status:\n%s", r.stdout)
	}
	mustOK(t, run(t, admin, "", "machine", "enable", "ci"), "enable")
	mustOK(t, login(sids[1].SecretID), "machine login after enable")

	// Revoke them all, then delete the machine.
	r = mustOK(t, run(t, admin, "", "machine", "revoke-secret", "ci", "--all"), "revoke-secret --all")
	if !strings.Contains(r.stdout, "Revoked 2") {
		t.Errorf("revoke-secret --all: %q", r.stdout)
	}
	if r := login(sids[2].SecretID); r.code == 0 {
		t.Error("a secret id survived revoke-secret --all")
	}
	mustOK(t, run(t, admin, "", "machine", "rm", "ci"), "machine rm")
	if r := run(t, admin, "", "machine", "show", "ci"); r.code != 1 {
		t.Errorf("machine show after rm: exit %d", r.code)
	}
	ev := mustOK(t, run(t, admin, "", "audit", "ls", "--format", "json"), "audit ls").stdout
	for _, a := range []string{"identity.machine.secret_id.revoke", "identity.machine.disable", "identity.machine.enable", "identity.machine.delete"} {
		if !strings.Contains(ev, `"`+a+`"`) {
			t.Errorf("no %s event", a)
		}
	}
	// The README's example: an unknown subcommand is a usage error.
	if r := run(t, admin, "", "machine", "shw", "ci"); r.code != 2 || r.stdout != "" {
		t.Errorf("machine shw: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestUserAdminCommands(t *testing.T) {
	admin, env := devEnv(t)
	const pw = "correct horse battery"
	mustOK(t, run(t, admin, pw+"\n", "user", "create", "alice", "--password-stdin"), "user create")
	for range 5 {
		if r := run(t, env, "wrong password!!\n", "login", "--user", "alice", "--password-stdin"); r.code != 1 {
			t.Fatalf("wrong password: exit %d", r.code)
		}
	}
	if r := run(t, env, pw+"\n", "login", "--user", "alice", "--password-stdin"); r.code != 1 || !strings.Contains(r.stderr, "too many") {
		t.Fatalf("locked login: exit %d, stderr %q", r.code, r.stderr)
	}
	type user struct {
		Name         string    `json:"name"`
		FailedLogins int       `json:"failed_logins"`
		LockedUntil  time.Time `json:"locked_until"`
	}
	u := decodeJSON[user](t, mustOK(t, run(t, admin, "", "user", "show", "alice", "--format", "json"), "user show").stdout)
	if u.FailedLogins != 5 || time.Until(u.LockedUntil) < 10*time.Minute {
		t.Errorf("user show of a locked user = %+v", u)
	}
	if r := mustOK(t, run(t, admin, "", "user", "show", "alice"), "user show table"); !strings.Contains(r.stdout, "Locked") || !strings.Contains(r.stdout, "yes, until") {
		t.Errorf("user show table:\n%s", r.stdout)
	}
	mustOK(t, run(t, admin, "", "user", "unlock", "alice"), "user unlock")
	mustOK(t, run(t, env, pw+"\n", "login", "--user", "alice", "--password-stdin"), "login after unlock")
	mustOK(t, run(t, env, "", "whoami"), "whoami")

	// The admin resets alice's password: her token goes, the new one works.
	const newPW = "a brand new passphrase"
	if r := run(t, admin, "", "user", "set-password", "alice"); r.code != 2 {
		t.Errorf("set-password without a password source: exit %d", r.code)
	}
	mustOK(t, run(t, admin, newPW+"\n", "user", "set-password", "alice", "--password-stdin"), "set-password")
	if r := run(t, env, "", "whoami"); r.code == 0 {
		t.Error("alice's token survived a password reset")
	}
	if r := run(t, env, pw+"\n", "login", "--user", "alice", "--password-stdin"); r.code == 0 {
		t.Error("the old password still works")
	}
	mustOK(t, run(t, env, newPW+"\n", "login", "--user", "alice", "--password-stdin"), "login with the new password")

	// A non-administrator's bare listings say what they may list.
	if r := run(t, env, "", "request", "ls"); r.code != 1 || !strings.Contains(r.stderr, "--mine") || !strings.Contains(r.stderr, "--pending-for-me") {
		t.Errorf("request ls as alice: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, env, "", "grant", "ls"); r.code != 1 || !strings.Contains(r.stderr, "--mine") {
		t.Errorf("grant ls as alice: exit %d, stderr %q", r.code, r.stderr)
	}
	mustOK(t, run(t, env, "", "request", "ls", "--mine"), "request ls --mine")

	// A TOTP code used to confirm the enrollment is refused at login as
	// used, not as invalid; a recovery code goes on stdin, not --totp.
	type enrollment struct {
		URI           string   `json:"uri"`
		RecoveryCodes []string `json:"recovery_codes"`
	}
	en := decodeJSON[enrollment](t, mustOK(t, run(t, env, "", "mfa", "enroll", "totp", "--format", "json"), "mfa enroll").stdout)
	code := totpCode(t, en.URI, time.Now())
	conf := decodeJSON[enrollment](t, mustOK(t, run(t, env, "", "mfa", "confirm", "totp", "--code", code, "--format", "json"), "mfa confirm").stdout)
	r := run(t, env, newPW+"\n", "login", "--user", "alice", "--password-stdin", "--totp", code)
	if r.code != 1 || !strings.Contains(r.stderr, "already used; wait for the next one") {
		t.Errorf("login with the confirming code: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, env, newPW+"\n", "login", "--user", "alice", "--password-stdin", "--totp", conf.RecoveryCodes[0])
	if r.code != 2 || strings.Contains(r.stderr, conf.RecoveryCodes[0]) {
		t.Errorf("login with a recovery code in --totp: exit %d, stderr %q", r.code, r.stderr)
	}
	mustOK(t, run(t, env, newPW+"\n"+conf.RecoveryCodes[0]+"\n", "login", "--user", "alice", "--password-stdin", "--totp-stdin"), "login with a recovery code on stdin")

	// Logout leaves none of login's credential files behind.
	cfgDir := strings.TrimPrefix(env[2], "WARDER_CONFIG_DIR=")
	mustOK(t, run(t, env, "", "logout"), "logout")
	for _, name := range []string{"token", "id_ed25519_warder", "id_ed25519_warder-cert.pub"} {
		if _, err := os.Stat(filepath.Join(cfgDir, name)); !os.IsNotExist(err) {
			t.Errorf("%s after logout: %v", name, err)
		}
	}
}
