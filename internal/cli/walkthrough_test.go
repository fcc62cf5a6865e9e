package cli

// Tests of what a walk through the README found: credentials passed to
// the command of warder run, secrets echoed in usage errors, usage errors
// that exited 0, unhelpful errors and help, and the SSH key left behind
// by logout.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh/agent"
)

// walkFake serves GET /v1/secrets/app/db and a refusal of the listings
// that need an administrator.
type walkFake struct{ data map[string]string }

func (f walkFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg, "request_id": "req1"}})
	}
	q := r.URL.Query()
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/secrets/app/db":
		json.NewEncoder(w).Encode(map[string]any{"path": "app/db", "version": 1, "data": f.data})
	case "GET /v1/requests":
		if q.Get("mine") == "" && q.Get("pending_for_me") == "" {
			fail(403, "denied", `authz: user:bob is not allowed to admin System::"warder"`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"requests": []any{}})
	case "GET /v1/grants":
		if q.Get("mine") == "" {
			fail(403, "denied", `authz: user:bob is not allowed to admin System::"warder"`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"grants": []any{}})
	default:
		fail(404, "not_found", "api: no such endpoint")
	}
}

func setupWalk(t *testing.T, f walkFake) {
	t.Helper()
	serveCLI(t, f, "wt1.caller.credential")
}

// envOf parses the output of env(1).
func envOf(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestRunDropsCredentials: the command warder run starts gets the
// secret's keys, never the caller's token nor the server's secret
// settings; WARDER_ADDR and WARDER_CACERT are not secret and are kept.
func TestRunDropsCredentials(t *testing.T) {
	setupWalk(t, walkFake{data: map[string]string{"DB_PASSWORD": "s3cret"}})
	t.Setenv("WARDER_STORAGE", "postgres://warder:dbpw@db/warder")
	t.Setenv("WARDER_NOTIFY_WEBHOOKS", "slack:https://hooks.example/T0/B0/xyz")
	t.Setenv("WARDER_NOTIFY_WEBHOOK_SECRET", "hmac-key")
	r := runCLI("", "run", "--secret", "app/db", "--", "env")
	if r.code != 0 {
		t.Fatalf("run: exit %d, stderr %q", r.code, r.stderr)
	}
	got := envOf(r.stdout)
	if got["DB_PASSWORD"] != "s3cret" {
		t.Errorf("the secret's key is missing: %v", got)
	}
	for _, k := range []string{"WARDER_TOKEN", "WARDER_STORAGE", "WARDER_NOTIFY_WEBHOOKS", "WARDER_NOTIFY_WEBHOOK_SECRET"} {
		if v, ok := got[k]; ok {
			t.Errorf("the command got %s=%s", k, v)
		}
	}
	if strings.Contains(r.stdout, "wt1.caller.credential") {
		t.Error("the caller's token reached the command")
	}
	if got["WARDER_ADDR"] == "" || got["WARDER_CACERT"] == "" {
		t.Errorf("WARDER_ADDR and WARDER_CACERT should be passed on: %v", got)
	}

	// A secret may give the command a token of its own.
	setupWalk(t, walkFake{data: map[string]string{"WARDER_TOKEN": "wt1.the.pipelines"}})
	r = runCLI("", "run", "--secret", "app/db", "--", "env")
	if got := envOf(r.stdout); r.code != 0 || got["WARDER_TOKEN"] != "wt1.the.pipelines" {
		t.Errorf("a secret's WARDER_TOKEN: exit %d, env %v", r.code, got)
	}

	// psql (db connect) does not get them either.
	env := psqlEnviron([]string{"HOME=/root", "WARDER_TOKEN=wt1.x", "WARDER_STORAGE=postgres://a:b@c/d", "WARDER_ADDR=https://w"})
	if want := []string{"HOME=/root", "WARDER_ADDR=https://w"}; !slices.Equal(env, want) {
		t.Errorf("psqlEnviron = %v, want %v", env, want)
	}
}

// walk calls f for every command of the tree.
func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}

// pathArgs is the command line of c without the leading "warder".
func pathArgs(c *cobra.Command) []string {
	return strings.Fields(c.CommandPath())[1:]
}

// variadic are the commands that take any number of arguments.
var variadic = map[string]bool{
	"warder run":        true, // the command to run
	"warder ssh":        true, // ssh's own arguments
	"warder secret put": true, // KEY=VALUE pairs
	"warder db connect": true, // psql's own arguments
}

// TestCommandTreeUsageErrors walks the whole command tree: every command
// group refuses an unknown subcommand with a usage error (exit 2, no help
// on stdout), and every other command declares its arguments and refuses
// wrong ones with a usage error too.
func TestCommandTreeUsageErrors(t *testing.T) {
	setupWalk(t, walkFake{})
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: os.Getenv}
	root := e.commandTree()
	groups, leaves := 0, 0
	walk(root, func(c *cobra.Command) {
		if c.Hidden || c.Name() == "__complete" || c.Name() == "__completeNoDesc" {
			return
		}
		path := c.CommandPath()
		if c.HasSubCommands() {
			groups++
			args := append(pathArgs(c), "no-such-command")
			r := runCLI("", args...)
			if r.code != 2 || r.stdout != "" {
				t.Errorf("%s no-such-command: exit %d, stdout %q, stderr %q; want a usage error", path, r.code, r.stdout, r.stderr)
			}
			if c.Annotations[groupAnnotation] == "" {
				return // a command of its own, such as checkout TARGET/USER
			}
			if !strings.Contains(r.stderr, `unknown command "no-such-command"`) {
				t.Errorf("%s no-such-command: stderr %q", path, r.stderr)
			}
			if r := runCLI("", pathArgs(c)...); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
				t.Errorf("%s alone: exit %d, stdout %q; want its help", path, r.code, r.stdout)
			}
			return
		}
		leaves++
		if c.Args == nil && !variadic[path] {
			t.Errorf("%s does not declare its arguments", path)
			return
		}
		if variadic[path] {
			return
		}
		many := make([]string, 20)
		for i := range many {
			many[i] = "extra"
		}
		if err := c.Args(c, many); err == nil {
			t.Errorf("%s accepts 20 arguments", path)
		} else if _, ok := err.(usageError); !ok {
			t.Errorf("%s: %v is not a usage error", path, err)
		}
	})
	t.Logf("walked %d groups and %d other commands", groups, leaves)
	if groups < 15 || leaves < 80 {
		t.Errorf("walked %d groups and %d other commands: not the whole tree?", groups, leaves)
	}

	// The README's example, and commands whose argument errors cobra words
	// in ways the exit code used not to recognise.
	for _, args := range [][]string{
		{"machine", "show-me", "ci"},
		{"secret", "put"},
		{"completion", "nosuch"},
		{"nosuch"},
		{"help", "machine", "nosuch"},
	} {
		if r := runCLI("", args...); r.code != 2 {
			t.Errorf("warder %s: exit %d, want 2; stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if r := runCLI("", "machine", "sho", "ci"); !strings.Contains(r.stderr, `did you mean "show"?`) {
		t.Errorf("a near miss: stderr %q; want a suggestion", r.stderr)
	}
}

// TestSecretArgsNotEchoed: a secret given as an argument to a command that
// reads it from a prompt or stdin is refused without being repeated.
func TestSecretArgsNotEchoed(t *testing.T) {
	setupWalk(t, walkFake{})
	const share = "wsh1-abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnop"
	const secretID = "wsi1.0123456789abcdef01.S3CRETS3CRETS3CRETS3CRETS3CRETS3CRETS3CRETAB"
	for _, tc := range []struct {
		args   []string
		secret string
		want   string
	}{
		{[]string{"operator", "unseal", share}, share, "shares are read from the prompt or stdin"},
		{[]string{"operator", share}, share, "unknown command"},
		{[]string{share}, share, "unknown command"},
		{[]string{"login", "--user", "alice", "my password 123"}, "my password 123", "password is read from the prompt or stdin"},
		{[]string{"machine", "login", "--role-id", "r1", secretID}, secretID, "secret id is read from stdin"},
		{[]string{"mfa", "confirm", "totp", "482913"}, "482913", "--code"},
		{[]string{"mfa", "enroll", "totp", "482913"}, "482913", "--code"},
		{[]string{"user", "set-password", "bob", "my password 123"}, "my password 123", "accepts 1 arg"},
		{[]string{"account", "add", "pg/app", "my password 123"}, "my password 123", "accepts 1 arg"},
		{[]string{"machine", "revoke-secret", "ci", secretID}, "S3CRET", "its accessor is 0123456789abcdef01"},
		{[]string{"login", "--user", "alice", "--password-stdin", "--totp", "abcd-efgh-ijkl-mnop"}, "abcd-efgh-ijkl-mnop", "enter it at the prompt"},
		{[]string{"login", "--user", "alice", "--password-stdin", "--totp", "ABCDEFGHIJKLMNOP"}, "ABCDEFGHIJKLMNOP", "enter it at the prompt"},
	} {
		name := strings.Join(tc.args[:min(2, len(tc.args))], " ")
		r := runCLI("long enough password\n", tc.args...)
		if r.code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr %q", name, r.code, r.stderr)
		}
		if strings.Contains(r.stderr+r.stdout, tc.secret) {
			t.Errorf("%s repeats the secret: %q", name, r.stderr)
		}
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: stderr %q; want it to say %q", name, r.stderr, tc.want)
		}
	}
	if !isTOTPCode("123 456") || isTOTPCode("12345") || isTOTPCode("abcd-efgh-ijkl-mnop") {
		t.Error("isTOTPCode")
	}
}

// TestListHints: a non-administrator's bare "request ls" and "grant ls"
// say which flags list what they may see.
func TestListHints(t *testing.T) {
	setupWalk(t, walkFake{})
	r := runCLI("", "request", "ls")
	if r.code != 1 || !strings.Contains(r.stderr, "not allowed to admin") || !strings.Contains(r.stderr, "--mine") || !strings.Contains(r.stderr, "--pending-for-me") {
		t.Errorf("request ls: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runCLI("", "grant", "ls")
	if r.code != 1 || !strings.Contains(r.stderr, "--mine") {
		t.Errorf("grant ls: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"request", "ls", "--mine"}, {"request", "ls", "--pending-for-me"}, {"grant", "ls", "--mine"}} {
		if r := runCLI("", args...); r.code != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	// checkout extend takes its duration from --ttl, not an argument.
	e := &env{getenv: os.Getenv}
	if c := e.checkoutExtendCommand(); strings.Contains(c.Short, "DURATION from now") || !strings.Contains(c.Short, "--ttl") {
		t.Errorf("checkout extend: %q", c.Short)
	}
}

// TestWarnWebhookSecretFlag: a webhook secret on the command line draws
// the warning a storage password does, without repeating it.
func TestWarnWebhookSecretFlag(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	warnExposedSecrets(logger, "", map[string]string{"notify_webhook_secret": "hmac-key-123", "notify_webhooks": "slack:https://hooks.example/T/B/xyz"})
	out := buf.String()
	for _, want := range []string{"--notify-webhook-secret", "WARDER_NOTIFY_WEBHOOK_SECRET", "--notify-webhooks", "WARDER_NOTIFY_WEBHOOKS", "config file"} {
		if !strings.Contains(out, want) {
			t.Errorf("warning %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "hmac-key-123") || strings.Contains(out, "xyz") {
		t.Errorf("the warning repeats the secret: %q", out)
	}
	buf.Reset()
	cfg := filepath.Join(t.TempDir(), "warder.yaml")
	os.WriteFile(cfg, []byte("notify_webhook_secret: hmac-key-123\n"), 0o644)
	warnExposedSecrets(logger, cfg, nil)
	if !strings.Contains(buf.String(), "chmod 600") {
		t.Errorf("a readable config file with a webhook secret: %q", buf.String())
	}
}

// TestLogoutCleansAgentAndFiles: login replaces its earlier identity in
// ssh-agent instead of adding another; logout removes it and the files
// login wrote, and leaves the agent's other keys alone.
func TestLogoutCleansAgentAndFiles(t *testing.T) {
	f := newSSHFake(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/auth/token/revoke-self" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := setupSSH(t, f)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	t.Setenv("WARDER_ADDR", srv.URL)
	t.Setenv("WARDER_CACERT", ca)
	t.Setenv("WARDER_TOKEN", "")
	sock := startAgent(t)
	t.Setenv("SSH_AUTH_SOCK", sock)

	// Someone else's key, which logout must leave alone.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.NewClient(conn).Add(agent.AddedKey{PrivateKey: other, Comment: "mine"}); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	for i := range 3 {
		if r := runCLI("pw\n", "login", "--user", "alice", "--password-stdin"); r.code != 0 || strings.Contains(r.stderr, "Warning") {
			t.Fatalf("login %d: exit %d, stderr %q", i, r.code, r.stderr)
		}
	}
	certLine, _ := os.ReadFile(filepath.Join(cfg, "id_ed25519_warder-cert.pub"))
	keys := agentKeys(t, sock)
	if len(keys) != 2 || !slices.ContainsFunc(keys, func(k *agent.Key) bool { return authorizedLine(k) == strings.TrimSpace(string(certLine)) }) {
		t.Fatalf("after three logins the agent holds %d keys (%v); want the latest certificate and the other key", len(keys), keys)
	}

	r := runCLI("", "logout", "--format", "json")
	if r.code != 0 {
		t.Fatalf("logout: exit %d, stderr %q", r.code, r.stderr)
	}
	var out struct {
		Revoked      bool     `json:"revoked"`
		FilesRemoved []string `json:"files_removed"`
		AgentKeys    int      `json:"agent_keys_removed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !out.Revoked || out.AgentKeys != 1 || len(out.FilesRemoved) != 3 {
		t.Errorf("logout = %q (%v); want revoked, 1 agent key and 3 files removed", r.stdout, err)
	}
	if keys := agentKeys(t, sock); len(keys) != 1 || keys[0].Comment != "mine" {
		t.Errorf("after logout the agent holds %v; want only the other key", keys)
	}
	for _, name := range []string{"id_ed25519_warder", "id_ed25519_warder.pub", "id_ed25519_warder-cert.pub", "token"} {
		if _, err := os.Stat(filepath.Join(cfg, name)); !os.IsNotExist(err) {
			t.Errorf("%s is still there after logout: %v", name, err)
		}
	}

	// An agent that cannot be reached is a warning; the files still go.
	if r := runCLI("pw\n", "login", "--user", "alice", "--password-stdin"); r.code != 0 {
		t.Fatalf("login: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Setenv("SSH_AUTH_SOCK", filepath.Join(t.TempDir(), "nothing.sock"))
	r = runCLI("", "logout")
	if r.code != 0 || !strings.Contains(r.stderr, "Warning: the SSH key was not removed from ssh-agent") {
		t.Errorf("logout without an agent: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(cfg, "id_ed25519_warder-cert.pub")); !os.IsNotExist(err) {
		t.Errorf("the certificate is still there: %v", err)
	}
}

// TestLoginTOTPStdin: a second factor (a recovery code, say) can come on
// stdin after the password, never as an argument.
func TestLoginTOTPStdin(t *testing.T) {
	setup(t)
	if r := runCLI("pw\n123456\n", "login", "--user", "bob", "--password-stdin", "--totp-stdin"); r.code != 0 {
		t.Errorf("login with the code on stdin: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
	}{
		{"pw\n", []string{"--password-stdin", "--totp-stdin"}},                             // no code
		{"pw\n123456\n", []string{"--password-stdin", "--totp-stdin", "--totp", "123456"}}, // both
		{"123456\n", []string{"--totp-stdin"}},                                             // no password on stdin
	} {
		if r := runCLI(tc.stdin, append([]string{"login", "--user", "bob"}, tc.args...)...); r.code != 2 {
			t.Errorf("login %v: exit %d, want 2; stderr %q", tc.args, r.code, r.stderr)
		}
	}
}
