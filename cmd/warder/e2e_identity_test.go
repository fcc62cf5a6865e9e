package main

// End-to-end tests of the identity and policy commands: users, login with
// TOTP, groups, machines and the pipeline login, policies.

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type tokenInfo struct {
	ID        string `json:"id"`
	Principal struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	} `json:"principal"`
	MFA       bool      `json:"mfa"`
	ExpiresAt time.Time `json:"expires_at"`
}

// devEnv starts a dev server and returns the admin's CLI environment and a
// user's, which has no token but its own configuration directory.
func devEnv(t *testing.T) (admin, user []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem")}
	admin = append(base[:2:2], "WARDER_TOKEN="+strings.TrimSpace(string(token)), "WARDER_CONFIG_DIR="+filepath.Join(t.TempDir(), "admin-config"))
	user = append(base[:2:2], "WARDER_CONFIG_DIR="+filepath.Join(t.TempDir(), "user-config"))
	return admin, user
}

// totpCode computes the current code for an otpauth:// URI (RFC 6238,
// HMAC-SHA1, the URI's digits and period or 6 and 30).
func totpCode(t *testing.T, uri string, at time.Time) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(q.Get("secret")))
	if err != nil {
		t.Fatalf("secret of %q: %v", uri, err)
	}
	digits, period := 6, int64(30)
	fmt.Sscan(q.Get("digits"), &digits)
	fmt.Sscan(q.Get("period"), &period)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix()/period))
	m := hmac.New(sha1.New, key)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0xf
	v := binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
	mod := uint32(1)
	for range digits {
		mod *= 10
	}
	return fmt.Sprintf("%0*d", digits, v%mod)
}

func TestUserLoginTOTP(t *testing.T) {
	admin, env := devEnv(t)
	type user struct {
		Name        string `json:"name"`
		DisplayName string `json:"display_name"`
		Email       string `json:"email"`
		Status      string `json:"status"`
		HasPassword bool   `json:"has_password"`
		MFAEnrolled bool   `json:"mfa_enrolled"`
	}
	u := decodeJSON[user](t, mustOK(t, run(t, admin, "correct horse battery\n", "user", "create", "alice", "--password-stdin",
		"--email", "alice@example.com", "--display-name", "Alice L", "--format", "json"), "user create").stdout)
	if u.Name != "alice" || u.Email != "alice@example.com" || u.DisplayName != "Alice L" || u.Status != "active" || !u.HasPassword {
		t.Errorf("user create = %+v", u)
	}
	mustOK(t, run(t, admin, "", "user", "create", "nopass"), "user create without password")
	us := decodeJSON[[]user](t, mustOK(t, run(t, admin, "", "user", "ls", "--format", "json"), "user ls").stdout)
	names := map[string]bool{}
	for _, u := range us {
		names[u.Name] = true
	}
	if !names["alice"] || !names["nopass"] {
		t.Errorf("user ls: %+v", us)
	}
	if r := run(t, admin, "", "user", "show", "nobody"); r.code != 1 || !strings.Contains(r.stderr, "nobody") {
		t.Errorf("user show nobody: exit %d, stderr %q", r.code, r.stderr)
	}

	// Login stores the token in the configuration directory, mode 0600.
	mustOK(t, run(t, env, "correct horse battery\n", "login", "--user", "alice", "--password-stdin"), "login")
	cfgDir := strings.TrimPrefix(env[2], "WARDER_CONFIG_DIR=")
	if fi, err := os.Stat(filepath.Join(cfgDir, "token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	ti := decodeJSON[tokenInfo](t, mustOK(t, run(t, env, "", "whoami", "--format", "json"), "whoami").stdout)
	if ti.Principal.Kind != "user" || ti.Principal.Name != "alice" || ti.MFA || ti.ExpiresAt.IsZero() {
		t.Errorf("whoami after login = %+v", ti)
	}
	renewed := decodeJSON[tokenInfo](t, mustOK(t, run(t, env, "", "token", "renew", "--format", "json"), "token renew").stdout)
	if renewed.ID != ti.ID || renewed.ExpiresAt.Before(ti.ExpiresAt) {
		t.Errorf("token renew = %+v, was %+v", renewed, ti)
	}
	if r := run(t, env, "", "user", "ls"); r.code == 0 {
		t.Error("a user who is not an admin listed users")
	}

	// Enrol TOTP: JSON output, confirmation with --code.
	type enrollment struct {
		Secret        string   `json:"secret"`
		URI           string   `json:"uri"`
		RecoveryCodes []string `json:"recovery_codes"`
	}
	en := decodeJSON[enrollment](t, mustOK(t, run(t, env, "", "mfa", "enroll", "totp", "--format", "json"), "mfa enroll").stdout)
	if en.Secret == "" || !strings.HasPrefix(en.URI, "otpauth://totp/") || en.RecoveryCodes != nil {
		t.Fatalf("mfa enroll = %+v", en)
	}
	// The table form draws the QR code with --qr; enrolling again restarts.
	r := mustOK(t, run(t, env, "", "mfa", "enroll", "totp", "--qr"), "mfa enroll --qr")
	if !strings.Contains(r.stdout, "▀") || !strings.Contains(r.stdout, "otpauth://") || !strings.Contains(r.stderr, "mfa confirm totp") {
		t.Errorf("mfa enroll --qr: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	uri := r.stdout[strings.Index(r.stdout, "otpauth://"):]
	uri = uri[:strings.IndexByte(uri, '\n')]
	conf := decodeJSON[enrollment](t, mustOK(t, run(t, env, "", "mfa", "confirm", "totp", "--code", totpCode(t, uri, time.Now()), "--format", "json"), "mfa confirm").stdout)
	if len(conf.RecoveryCodes) == 0 {
		t.Fatalf("mfa confirm returned no recovery codes")
	}

	// Logout revokes the token and removes the file.
	mustOK(t, run(t, env, "", "logout"), "logout")
	if _, err := os.Stat(filepath.Join(cfgDir, "token")); !os.IsNotExist(err) {
		t.Errorf("token file after logout: %v", err)
	}
	if r := run(t, append(env[:2:2], "WARDER_TOKEN="+"x"), "", "whoami"); r.code == 0 {
		t.Error("whoami with a junk token succeeded")
	}

	// Now login needs a second factor: without a terminal it says --totp.
	r = run(t, env, "correct horse battery\n", "login", "--user", "alice", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, "--totp") {
		t.Errorf("login without a code: exit %d, stderr %q", r.code, r.stderr)
	}
	mustOK(t, run(t, env, "correct horse battery\n"+conf.RecoveryCodes[0]+"\n", "login", "--user", "alice", "--password-stdin", "--totp-stdin"), "login with recovery code")
	if ti := decodeJSON[tokenInfo](t, mustOK(t, run(t, env, "", "whoami", "--format", "json"), "whoami").stdout); !ti.MFA {
		t.Errorf("whoami after MFA login = %+v, want mfa", ti)
	}
	if r := run(t, env, "correct horse battery\n"+conf.RecoveryCodes[0]+"\n", "login", "--user", "alice", "--password-stdin", "--totp-stdin"); r.code == 0 {
		t.Error("a recovery code worked twice")
	}

	// Disabling alice revokes her stored token at once.
	if u := decodeJSON[user](t, mustOK(t, run(t, admin, "", "user", "disable", "alice", "--format", "json"), "disable").stdout); u.Status != "disabled" {
		t.Errorf("user disable = %+v", u)
	}
	if r := run(t, env, "", "whoami"); r.code == 0 {
		t.Error("a disabled user's token still works")
	}
	mustOK(t, run(t, admin, "", "user", "enable", "alice"), "enable")
	mustOK(t, run(t, admin, "", "user", "delete", "alice"), "delete")
	if r := run(t, admin, "", "user", "show", "alice"); r.code == 0 {
		t.Error("user show after delete succeeded")
	}
}

func TestGroupsMachinesPolicies(t *testing.T) {
	admin, env := devEnv(t)
	mustOK(t, run(t, admin, "pw-for-bob-123\n", "user", "create", "bob", "--password-stdin"), "user create")

	type group struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Members     []struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"members"`
	}
	mustOK(t, run(t, admin, "", "group", "create", "ops", "--description", "on call"), "group create")
	g := decodeJSON[group](t, mustOK(t, run(t, admin, "", "group", "add-member", "ops", "--user", "bob", "--format", "json"), "add-member").stdout)
	if len(g.Members) != 1 || g.Members[0].Kind != "user" || g.Members[0].Name != "bob" {
		t.Errorf("after add-member: %+v", g)
	}
	g = decodeJSON[group](t, mustOK(t, run(t, admin, "", "group", "show", "ops", "--format", "json"), "group show").stdout)
	if g.Description != "on call" || len(g.Members) != 1 {
		t.Errorf("group show = %+v", g)
	}
	gs := decodeJSON[[]group](t, mustOK(t, run(t, admin, "", "group", "ls", "--format", "json"), "group ls").stdout)
	if len(gs) == 0 {
		t.Errorf("group ls is empty")
	}
	g = decodeJSON[group](t, mustOK(t, run(t, admin, "", "group", "remove-member", "ops", "--user", "bob", "--format", "json"), "remove-member").stdout)
	if len(g.Members) != 0 {
		t.Errorf("after remove-member: %+v", g)
	}

	// Machines: create, issue a one-use secret id, log in from a pipeline.
	type machine struct {
		Name   string `json:"name"`
		RoleID string `json:"role_id"`
	}
	m := decodeJSON[machine](t, mustOK(t, run(t, admin, "", "machine", "create", "ci", "--token-ttl", "20m", "--format", "json"), "machine create").stdout)
	if m.RoleID == "" {
		t.Fatalf("machine create = %+v", m)
	}
	if ms := decodeJSON[[]machine](t, mustOK(t, run(t, admin, "", "machine", "ls", "--format", "json"), "machine ls").stdout); len(ms) != 1 || ms[0] != m {
		t.Errorf("machine ls = %+v", ms)
	}
	type issued struct {
		SecretID string `json:"secret_id"`
		Info     struct {
			ID    string   `json:"id"`
			Uses  int      `json:"uses"`
			CIDRs []string `json:"cidrs"`
		} `json:"info"`
	}
	is := decodeJSON[issued](t, mustOK(t, run(t, admin, "", "machine", "issue-secret", "ci", "--uses", "1", "--ttl", "1h", "--cidr", "127.0.0.0/8", "--format", "json"), "issue-secret").stdout)
	if is.SecretID == "" || is.Info.ID == "" || is.Info.Uses != 1 || !reflect.DeepEqual(is.Info.CIDRs, []string{"127.0.0.0/8"}) {
		t.Fatalf("issue-secret = %+v", is)
	}
	r := mustOK(t, run(t, env, is.SecretID+"\n", "machine", "login", "--role-id", m.RoleID), "machine login")
	token := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(token, "wt1.") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("machine login printed %q, want only the token", r.stdout)
	}
	ti := decodeJSON[tokenInfo](t, mustOK(t, run(t, append(env[:2:2], "WARDER_TOKEN="+token), "", "whoami", "--format", "json"), "whoami machine").stdout)
	if ti.Principal.Kind != "machine" || ti.Principal.Name != "ci" {
		t.Errorf("machine whoami = %+v", ti)
	}
	if r := run(t, env, is.SecretID+"\n", "machine", "login", "--role-id", m.RoleID); r.code == 0 {
		t.Error("a one-use secret id worked twice")
	}

	// Policies: put from a file and from stdin, check, show, delete.
	file := filepath.Join(t.TempDir(), "bob.cedar")
	text := `permit(principal == User::"bob", action == Action::"checkout", resource == Account::"prod-pg/postgres") when { context.mfa };` + "\n"
	os.WriteFile(file, []byte(text), 0o600)
	mustOK(t, run(t, admin, "", "policy", "put", "bob-checkout", file), "policy put")
	if r := run(t, admin, "permit(principal, action == Action::\"fly\", resource);", "policy", "put", "bad", "-"); r.code != 1 || r.stderr == "" {
		t.Errorf("policy put of an invalid policy: exit %d, stderr %q", r.code, r.stderr)
	}
	type policy struct {
		Name    string   `json:"name"`
		Text    string   `json:"text"`
		Builtin bool     `json:"builtin"`
		IDs     []string `json:"ids"`
	}
	p := decodeJSON[policy](t, mustOK(t, run(t, admin, "", "policy", "show", "bob-checkout", "--format", "json"), "policy show").stdout)
	if p.Text != text || p.Builtin || !reflect.DeepEqual(p.IDs, []string{"bob-checkout"}) {
		t.Errorf("policy show = %+v", p)
	}
	if ps := decodeJSON[[]policy](t, mustOK(t, run(t, admin, "", "policy", "ls", "--format", "json"), "policy ls").stdout); len(ps) < 2 {
		t.Errorf("policy ls = %+v, want the builtin and bob-checkout", ps)
	}
	check := []string{"policy", "check", "--principal", `User::"bob"`, "--action", "checkout", "--resource", `Account::"prod-pg/postgres"`, "--format", "json"}
	d := decodeJSON[map[string]any](t, mustOK(t, run(t, admin, "", append(check, "--context", `{"mfa":true}`)...), "check allow").stdout)
	if want := map[string]any{"decision": "allow", "policies": []any{"bob-checkout"}}; !reflect.DeepEqual(d, want) {
		t.Errorf("check with mfa = %v, want %v", d, want)
	}
	r = run(t, admin, "", check...)
	if d := decodeJSON[map[string]any](t, r.stdout); r.code != 0 || d["decision"] != "deny" {
		t.Errorf("check without mfa: exit %d, %v; want deny, exit 0", r.code, d)
	}
	if r := run(t, admin, "", append(check, "--exit-code")...); r.code != 3 {
		t.Errorf("check --exit-code on deny: exit %d, want 3", r.code)
	}
	mustOK(t, run(t, admin, "", "policy", "delete", "bob-checkout"), "policy delete")
	if r := run(t, admin, "", "policy", "delete", "admins"); r.code == 0 {
		t.Error("deleting the builtin policy succeeded")
	}
}
