package cli

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeWarder is a small in-memory server speaking the parts of the API the
// tests drive: user login with optional TOTP, machine login, token self and
// revoke, and policy check (alice is allowed, everyone else denied).
type fakeWarder struct {
	mu      sync.Mutex // protects revoked
	revoked []string
}

func (f *fakeWarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg, "request_id": "req1"}})
	}
	var body map[string]any
	if r.Body != nil {
		json.NewDecoder(r.Body).Decode(&body)
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	info := func(id, kind, name string) map[string]any {
		return map[string]any{"id": id, "principal": map[string]string{"kind": kind, "name": name}, "mfa": false,
			"created_at": time.Unix(1e9, 0).UTC(), "expires_at": time.Unix(2e9, 0).UTC()}
	}
	switch r.Method + " " + r.URL.Path {
	case "POST /v1/auth/login":
		switch {
		case body["user"] == "alice" && body["password"] == "pw\tspace":
			json.NewEncoder(w).Encode(map[string]any{"token": "wt1.alice.secret", "token_info": info("alice", "user", "alice")})
		case body["user"] == "bob" && body["password"] == "pw" && body["totp"] == nil:
			fail(401, "unauthenticated", "identity: a TOTP code is required")
		case body["user"] == "bob" && body["password"] == "pw" && body["totp"] == "123456":
			json.NewEncoder(w).Encode(map[string]any{"token": "wt1.bob.secret", "token_info": info("bob", "user", "bob")})
		default:
			fail(401, "unauthenticated", "identity: invalid user name or password")
		}
	case "POST /v1/auth/machine/login":
		if body["role_id"] != "role1" || body["secret_id"] != "wsi1.acc.secret" {
			fail(401, "unauthenticated", "identity: invalid role id or secret id")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"token": "wt1.ci.secret", "token_info": info("ci", "machine", "ci")})
	case "GET /v1/auth/token/self":
		if tok == "" {
			fail(401, "unauthenticated", "api: a token is required")
			return
		}
		json.NewEncoder(w).Encode(info(tok, "user", "whoever")) // the id echoes the token presented
	case "POST /v1/auth/token/revoke-self":
		f.mu.Lock()
		f.revoked = append(f.revoked, tok)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case "POST /v1/policies/check":
		if body["principal"] == `User::"alice"` {
			io.WriteString(w, `{"decision":"allow","policies":["admins","ops.1"]}`)
		} else {
			io.WriteString(w, `{"decision":"deny","policies":[]}`)
		}
	default:
		fail(404, "not_found", "api: no such endpoint")
	}
}

// setup starts a fake server and points the CLI at it through the
// environment, with a fresh configuration directory.
func setup(t *testing.T) (*fakeWarder, string) {
	t.Helper()
	f := &fakeWarder{}
	return f, serveCLI(t, f, "")
}

// serveCLI starts h as a TLS server and points the CLI at it: its address
// and CA, a fresh configuration directory (returned) and token (the
// WARDER_TOKEN; "" for none).
func serveCLI(t *testing.T, h http.Handler, token string) string {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config")
	t.Setenv("WARDER_ADDR", srv.URL)
	t.Setenv("WARDER_CACERT", ca)
	t.Setenv("WARDER_CONFIG_DIR", cfg)
	t.Setenv("WARDER_TOKEN", token)
	return cfg
}

type out struct {
	code           int
	stdout, stderr string
}

func runCLI(stdin string, args ...string) out {
	var o, e strings.Builder
	code := Main(context.Background(), args, strings.NewReader(stdin), &o, &e)
	return out{code, o.String(), e.String()}
}

func TestPolicyCheck(t *testing.T) {
	setup(t)
	t.Setenv("WARDER_TOKEN", "wt1.admin")
	check := []string{"policy", "check", "--action", "checkout", "--resource", `Account::"prod-pg/postgres"`}
	for _, tc := range []struct {
		name      string
		args      []string
		wantCode  int
		wantJSON  map[string]any
		wantTable string
	}{
		{"allow json", append(check, "--principal", `User::"alice"`, "--format", "json", "--context", `{"mfa":true}`), 0,
			map[string]any{"decision": "allow", "policies": []any{"admins", "ops.1"}}, ""},
		{"deny json", append(check, "--principal", `User::"eve"`, "--format", "json"), 0,
			map[string]any{"decision": "deny", "policies": []any{}}, ""},
		{"allow table", append(check, "--principal", `User::"alice"`), 0, nil, "allow, by policies: admins, ops.1\n"},
		{"deny table", append(check, "--principal", `User::"eve"`), 0, nil, "deny: no policy permits it\n"},
		{"deny exit code", append(check, "--principal", `User::"eve"`, "--exit-code"), 3, nil, "deny: no policy permits it\n"},
		{"allow exit code", append(check, "--principal", `User::"alice"`, "--exit-code"), 0, nil, "allow, by policies: admins, ops.1\n"},
		{"context not an object", append(check, "--principal", `User::"alice"`, "--context", `[1]`), 2, nil, ""},
		{"no principal", check, 2, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI("", tc.args...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			if tc.wantJSON != nil {
				var got map[string]any
				if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
					t.Fatalf("output %q: %v", r.stdout, err)
				}
				if !reflect.DeepEqual(got, tc.wantJSON) {
					t.Errorf("json = %v, want exactly %v", got, tc.wantJSON)
				}
			}
			if tc.wantTable != "" && r.stdout != tc.wantTable {
				t.Errorf("table = %q, want %q", r.stdout, tc.wantTable)
			}
		})
	}
}

func TestLoginTokenPrecedenceLogout(t *testing.T) {
	f, cfg := setup(t)
	r := runCLI("pw\tspace\n", "login", "--user", "alice", "--password-stdin")
	if r.code != 0 {
		t.Fatalf("login: exit %d, stderr %q", r.code, r.stderr)
	}
	fi, err := os.Stat(filepath.Join(cfg, "token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	if strings.Contains(r.stdout, "wt1.alice.secret") {
		t.Errorf("login printed the token: %q", r.stdout)
	}

	whoami := func(args ...string) string {
		t.Helper()
		r := runCLI("", append([]string{"whoami", "--format", "json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("whoami: exit %d, stderr %q", r.code, r.stderr)
		}
		var ti struct{ ID string }
		json.Unmarshal([]byte(r.stdout), &ti)
		return ti.ID
	}
	if got := whoami(); got != "wt1.alice.secret" {
		t.Errorf("with only the file, whoami presented %q", got)
	}
	t.Setenv("WARDER_TOKEN", "wt1.env")
	if got := whoami(); got != "wt1.env" {
		t.Errorf("with WARDER_TOKEN, whoami presented %q", got)
	}
	if got := whoami("--token", "wt1.flag"); got != "wt1.flag" {
		t.Errorf("with --token, whoami presented %q", got)
	}

	// Logout with WARDER_TOKEN set revokes that token and keeps the file.
	if r := runCLI("", "logout"); r.code != 0 {
		t.Fatalf("logout: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(cfg, "token")); err != nil {
		t.Errorf("logout of the WARDER_TOKEN token removed the file: %v", err)
	}
	t.Setenv("WARDER_TOKEN", "")
	if r := runCLI("", "logout"); r.code != 0 {
		t.Fatalf("logout: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(cfg, "token")); !os.IsNotExist(err) {
		t.Errorf("token file still there after logout: %v", err)
	}
	if want := []string{"wt1.env", "wt1.alice.secret"}; !reflect.DeepEqual(f.revoked, want) {
		t.Errorf("revoked %v, want %v", f.revoked, want)
	}

	// A user with TOTP: without a terminal the code must come from --totp.
	r = runCLI("pw\n", "login", "--user", "bob", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, "--totp") {
		t.Errorf("TOTP login without a code: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runCLI("pw\n", "login", "--user", "bob", "--password-stdin", "--totp", "123456", "--format", "json")
	if r.code != 0 || whoami() != "wt1.bob.secret" {
		t.Errorf("TOTP login with --totp: exit %d, stderr %q", r.code, r.stderr)
	}
	// Wrong password: an error, and the stored token is kept.
	if r := runCLI("nope\n", "login", "--user", "alice", "--password-stdin"); r.code != 1 {
		t.Errorf("bad password: exit %d", r.code)
	}
	if whoami() != "wt1.bob.secret" {
		t.Error("a failed login replaced the stored token")
	}
	// No terminal and no --password-stdin: a usage error, not a hang.
	if r := runCLI("", "login", "--user", "alice"); r.code != 2 {
		t.Errorf("login without a password source: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestMachineLogin(t *testing.T) {
	setup(t)
	r := runCLI("wsi1.acc.secret\n", "machine", "login", "--role-id", "role1")
	if r.code != 0 || r.stdout != "wt1.ci.secret\n" {
		t.Fatalf("machine login: exit %d, stdout %q, stderr %q; want only the token", r.code, r.stdout, r.stderr)
	}
	r = runCLI("wsi1.acc.secret", "machine", "login", "--role-id", "role1", "--format", "json")
	var res struct {
		Token     string         `json:"token"`
		TokenInfo map[string]any `json:"token_info"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Token != "wt1.ci.secret" || res.TokenInfo["id"] != "ci" {
		t.Errorf("machine login json = %q (%v)", r.stdout, err)
	}
	if r := runCLI("", "machine", "login", "--role-id", "role1"); r.code != 2 {
		t.Errorf("machine login with empty stdin: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	setup(t)
	for _, args := range [][]string{
		{"user", "create"},
		{"user", "create", "alice", "--password", "hunter2"}, // secrets are never arguments
		{"group", "add-member", "ops", "--user", "a", "--machine", "m"},
		{"group", "remove-member", "ops"},
		{"machine", "create", "ci", "--token-ttl", "soon"},
		{"machine", "issue-secret", "ci", "--cidr", "10.0.0.0/33"},
		{"machine", "login"},
		{"policy", "put", "p"},
		{"mfa", "confirm", "totp"},
		{"login"},
	} {
		if r := runCLI("", args...); r.code != 2 {
			t.Errorf("warder %s: exit %d, want 2; stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

func TestPolicyFileLimit(t *testing.T) {
	setup(t)
	big := filepath.Join(t.TempDir(), "big.cedar")
	os.WriteFile(big, []byte(strings.Repeat("/", 64<<10+1)), 0o600)
	if r := runCLI("", "policy", "put", "p", big); r.code != 2 || !strings.Contains(r.stderr, "64 KiB") {
		t.Errorf("oversized policy: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI("  \n", "policy", "put", "p", "-"); r.code != 2 {
		t.Errorf("empty policy on stdin: exit %d, stderr %q", r.code, r.stderr)
	}
}
