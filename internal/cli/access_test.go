package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// jitCall is a request the fake access API received.
type jitCall struct {
	query string
	body  map[string]any // nil: no body
}

// fakeAccess answers the just-in-time access routes from canned JSON
// bodies keyed by "METHOD /escaped/path" (status 200; "" answers 204) and
// records every call by the same key.
type fakeAccess struct {
	answers map[string]string

	mu    sync.Mutex // protects calls
	calls map[string][]jitCall
}

func (f *fakeAccess) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.EscapedPath()
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"code":"invalid","message":"api: body is not a JSON object","request_id":"r1"}}`)
			return
		}
	}
	f.mu.Lock()
	f.calls[key] = append(f.calls[key], jitCall{r.URL.RawQuery, body})
	f.mu.Unlock()
	a, ok := f.answers[key]
	switch {
	case !ok:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"code":"not_found","message":"api: no such endpoint","request_id":"r1"}}`)
	case a == "":
		w.WriteHeader(http.StatusNoContent)
	default:
		io.WriteString(w, a)
	}
}

func (f *fakeAccess) called(key string) []jitCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[key])
}

// setupAccess starts a fake access API and points the CLI at it.
func setupAccess(t *testing.T, answers map[string]string) *fakeAccess {
	t.Helper()
	f := &fakeAccess{answers: answers, calls: map[string][]jitCall{}}
	serveCLI(t, f, "wt1.alice")
	return f
}

const (
	pendingRequest = `{"id":"rq-1","kind":"activation","status":"pending","role":"prod-dba","requester":{"kind":"user","name":"alice"},
		"ttl":"2h0m0s","reason":"fix replication","ticket":"INC-42","approvals_required":2,"approver_group":"dba-leads","require_mfa":true,
		"eligible_as":"group:dba","approvals":[{"approver":"user:bob","mfa":true,"at":"2030-01-01T00:05:00Z"}],
		"created_at":"2030-01-01T00:00:00Z","expires_at":"2030-01-01T01:00:00Z"}`
	activeGrant = `{"id":"g-1","role":"prod-dba","principal":{"kind":"user","name":"alice"},"request_id":"rq-1","policy":"grant:g-1",
		"starts_at":"2030-01-01T00:10:00Z","expires_at":"2030-01-01T02:10:00Z","status":"active",
		"ephemeral":{"target":"prod-pg","username":"w_alice_1","roles":["dba"],"state":"created"}}`
	roleJSON = `{"name":"prod-dba","description":"DBA on prod","template":"permit(principal == ?principal, action, resource in Target::\"prod-pg\");",
		"ephemeral":{"target":"prod-pg","roles":["dba"]},"break_glass":false,"created_at":"2030-01-01T00:00:00Z"}`
	credentialJSON = `{"target":"prod-pg","host":"db1.internal","port":5432,"username":"w_alice_1","password":"Sup3r-s3cret","valid_until":"2030-01-01T02:10:00Z"}`
)

func TestRequestCreate(t *testing.T) {
	const create = "POST /v1/requests"
	t.Run("json", func(t *testing.T) {
		f := setupAccess(t, map[string]string{create: pendingRequest})
		r := runCLI("", "request", "create", "--role", "prod-dba", "--ttl", "2h", "--reason", "fix replication", "--ticket", "INC-42", "--format", "json")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("output %q: %v", r.stdout, err)
		}
		if got["id"] != "rq-1" || got["status"] != "pending" || got["ttl"] != "2h0m0s" || got["approvals_required"] != 2.0 {
			t.Errorf("json = %v: want the whole request with id and status", got)
		}
		if a, _ := got["approvals"].([]any); len(a) != 1 {
			t.Errorf("json approvals = %v, want bob's", got["approvals"])
		}
		want := map[string]any{"role": "prod-dba", "ttl": "2h0m0s", "reason": "fix replication", "ticket": "INC-42"}
		if calls := f.called(create); len(calls) != 1 || !reflect.DeepEqual(calls[0].body, want) {
			t.Errorf("calls %+v, want one with body %v", calls, want)
		}
	})
	t.Run("table", func(t *testing.T) {
		setupAccess(t, map[string]string{create: pendingRequest})
		r := runCLI("", "request", "create", "--role", "prod-dba", "--ttl", "2h", "--reason", "x")
		if r.code != 0 || !strings.Contains(r.stdout, "rq-1") || !strings.Contains(r.stdout, "1/2 from dba-leads") {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}
		if !strings.Contains(r.stderr, "warder request show rq-1") {
			t.Errorf("stderr %q: want how to follow the request", r.stderr)
		}
	})
}

func TestRequestDecide(t *testing.T) {
	f := setupAccess(t, map[string]string{
		"POST /v1/requests/rq-1/deny":    pendingRequest,
		"POST /v1/requests/rq-1/approve": pendingRequest,
		"POST /v1/requests/rq-1/cancel":  pendingRequest,
	})
	for _, args := range [][]string{
		{"request", "deny", "rq-1"},
		{"request", "deny", "rq-1", "--comment", "  "},
	} {
		if r := runCLI("", args...); r.code != 2 || !strings.Contains(r.stderr, "--comment") {
			t.Errorf("warder %s: exit %d, stderr %q; want 2 asking for --comment", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if calls := f.called("POST /v1/requests/rq-1/deny"); len(calls) != 0 {
		t.Errorf("deny without a comment reached the server: %+v", calls)
	}
	if r := runCLI("", "request", "deny", "rq-1", "--comment", "not now"); r.code != 0 {
		t.Errorf("deny: exit %d, stderr %q", r.code, r.stderr)
	}
	if calls := f.called("POST /v1/requests/rq-1/deny"); len(calls) != 1 || calls[0].body["comment"] != "not now" {
		t.Errorf("deny calls %+v", calls)
	}
	if r := runCLI("", "request", "approve", "rq-1"); r.code != 0 {
		t.Errorf("approve: exit %d, stderr %q", r.code, r.stderr)
	}
	if calls := f.called("POST /v1/requests/rq-1/approve"); len(calls) != 1 || len(calls[0].body) != 0 {
		t.Errorf("approve calls %+v, want one with an empty object", calls)
	}
	if r := runCLI("", "request", "cancel", "rq-1", "--format", "json"); r.code != 0 || !strings.Contains(r.stdout, `"id": "rq-1"`) {
		t.Errorf("cancel: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestRequestList(t *testing.T) {
	f := setupAccess(t, map[string]string{"GET /v1/requests": `{"requests":[` + pendingRequest + `]}`})
	r := runCLI("", "request", "ls", "--pending-for-me", "--role", "prod-dba")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ID ROLE REQUESTER STATUS APPROVALS EXPIRES" ||
		!strings.Contains(lines[1], "user:alice") || !strings.Contains(lines[1], "1/2") {
		t.Errorf("table %q", r.stdout)
	}
	if calls := f.called("GET /v1/requests"); len(calls) != 1 || calls[0].query != "pending_for_me=1&role=prod-dba" {
		t.Errorf("calls %+v", calls)
	}
	if r := runCLI("", "request", "ls", "--mine", "--pending-for-me"); r.code != 2 {
		t.Errorf("--mine with --pending-for-me: exit %d, want 2", r.code)
	}
}

func TestRoleCreate(t *testing.T) {
	const create = "POST /v1/roles"
	dir := t.TempDir()
	policy := filepath.Join(dir, "dba.cedar")
	text := "permit(principal == ?principal, action == Action::\"checkout\", resource in Target::\"prod-pg\");\n"
	if err := os.WriteFile(policy, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.cedar")
	if err := os.WriteFile(big, []byte(strings.Repeat("/", maxPolicyText+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		wantBody map[string]any
	}{
		{"file", "", []string{"--policy", policy, "--description", "DBA on prod"}, 0,
			map[string]any{"name": "prod-dba", "template": text, "description": "DBA on prod"}},
		{"stdin", text, []string{"--policy", "-", "--break-glass"}, 0,
			map[string]any{"name": "prod-dba", "template": text, "break_glass": true}},
		{"ephemeral", "", []string{"--policy", policy, "--ephemeral-target", "prod-pg", "--ephemeral-role", "dba", "--ephemeral-role", "reader"}, 0,
			map[string]any{"name": "prod-dba", "template": text, "ephemeral": map[string]any{"target": "prod-pg", "roles": []any{"dba", "reader"}}}},
		{"break-glass rotating", "", []string{"--policy", policy, "--break-glass", "--rotate-account", "prod-pg/postgres", "--rotate-account", "prod-pg/repl"}, 0,
			map[string]any{"name": "prod-dba", "template": text, "break_glass": true, "rotate_accounts": []any{"prod-pg/postgres", "prod-pg/repl"}}},
		{"no policy", "", nil, 2, nil},
		{"rotate account without user", "", []string{"--policy", policy, "--rotate-account", "prod-pg"}, 2, nil},
		{"rotate account with empty target", "", []string{"--policy", policy, "--rotate-account", "/postgres"}, 2, nil},
		{"empty stdin", "\n", []string{"--policy", "-"}, 2, nil},
		{"too large", "", []string{"--policy", big}, 2, nil},
		{"missing file", "", []string{"--policy", filepath.Join(dir, "none.cedar")}, 1, nil},
		{"target without role", "", []string{"--policy", policy, "--ephemeral-target", "prod-pg"}, 2, nil},
		{"role without target", "", []string{"--policy", policy, "--ephemeral-role", "dba"}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setupAccess(t, map[string]string{create: roleJSON})
			r := runCLI(tc.stdin, append([]string{"role", "create", "prod-dba"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			calls := f.called(create)
			if tc.wantBody == nil {
				if len(calls) != 0 {
					t.Errorf("calls %+v, want none", calls)
				}
				return
			}
			if len(calls) != 1 || !reflect.DeepEqual(calls[0].body, tc.wantBody) {
				t.Errorf("calls %+v, want one with body %v", calls, tc.wantBody)
			}
			if !strings.Contains(r.stdout, "Target::") || !strings.Contains(r.stdout, "prod-pg: dba") {
				t.Errorf("stdout %q: want the role with its template", r.stdout)
			}
		})
	}
}

func TestRoleEligible(t *testing.T) {
	const set = "POST /v1/roles/prod-dba/eligibility"
	answer := `{"role":"prod-dba","subject":{"kind":"group","name":"dba"},"approvals":1,"approver_group":"dba-leads","max_ttl":"2h0m0s",
		"require_ticket":"^INC-[0-9]+$","reason_optional":false,"require_mfa":true,"created_at":"2030-01-01T00:00:00Z"}`
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantBody map[string]any
	}{
		{"user", []string{"--user", "alice"}, 0, map[string]any{"user": "alice", "max_ttl": "8h0m0s"}},
		{"group with terms", []string{"--group", "dba", "--approvals", "1", "--approver-group", "dba-leads", "--max-ttl", "2h",
			"--require-ticket", "^INC-[0-9]+$", "--require-mfa", "--reason-optional"}, 0,
			map[string]any{"group": "dba", "approvals": 1.0, "approver_group": "dba-leads", "max_ttl": "2h0m0s",
				"require_ticket": "^INC-[0-9]+$", "require_mfa": true, "reason_optional": true}},
		{"emergency", []string{"--group", "oncall", "--approvals", "2", "--approver-group", "dba-leads", "--allow-emergency"}, 0,
			map[string]any{"group": "oncall", "approvals": 2.0, "approver_group": "dba-leads", "max_ttl": "8h0m0s", "allow_emergency": true}},
		{"neither", nil, 2, nil},
		{"both", []string{"--user", "alice", "--group", "dba"}, 2, nil},
		{"approvals without group", []string{"--user", "alice", "--approvals", "1"}, 2, nil},
		{"group without approvals", []string{"--user", "alice", "--approver-group", "dba-leads"}, 2, nil},
		{"negative approvals", []string{"--user", "alice", "--approvals", "-1"}, 2, nil},
		{"zero max ttl", []string{"--user", "alice", "--max-ttl", "0s"}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setupAccess(t, map[string]string{set: answer})
			r := runCLI("", append([]string{"role", "eligible", "prod-dba"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			calls := f.called(set)
			if tc.wantBody == nil {
				if len(calls) != 0 {
					t.Errorf("calls %+v, want none", calls)
				}
				return
			}
			if len(calls) != 1 || !reflect.DeepEqual(calls[0].body, tc.wantBody) {
				t.Errorf("calls %+v, want one with body %v", calls, tc.wantBody)
			}
		})
	}
	t.Run("ineligible and list", func(t *testing.T) {
		f := setupAccess(t, map[string]string{
			"DELETE /v1/roles/prod-dba/eligibility/group/dba": "",
			"GET /v1/roles/prod-dba/eligibility":              `{"eligibility":[` + answer + `]}`,
		})
		if r := runCLI("", "role", "ineligible", "prod-dba"); r.code != 2 {
			t.Errorf("ineligible without subject: exit %d, want 2", r.code)
		}
		if r := runCLI("", "role", "ineligible", "prod-dba", "--group", "dba"); r.code != 0 {
			t.Errorf("ineligible: exit %d, stderr %q", r.code, r.stderr)
		}
		if calls := f.called("DELETE /v1/roles/prod-dba/eligibility/group/dba"); len(calls) != 1 {
			t.Errorf("delete calls %+v", calls)
		}
		r := runCLI("", "role", "eligibility", "prod-dba")
		if r.code != 0 || !strings.Contains(r.stdout, "group:dba") || !strings.Contains(r.stdout, "1 from dba-leads") {
			t.Errorf("eligibility: exit %d, stdout %q", r.code, r.stdout)
		}
	})
}

func TestGrantCredential(t *testing.T) {
	const path = "GET /v1/grants/g-1/credential"
	const password = "Sup3r-s3cret"
	t.Run("json", func(t *testing.T) {
		setupAccess(t, map[string]string{path: credentialJSON})
		r := runCLI("", "grant", "credential", "g-1", "--format", "json")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("output %q: %v", r.stdout, err)
		}
		want := map[string]any{"target": "prod-pg", "host": "db1.internal", "port": 5432.0, "username": "w_alice_1",
			"password": password, "valid_until": "2030-01-01T02:10:00Z"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("json = %v, want exactly %v", got, want)
		}
	})
	t.Run("table", func(t *testing.T) {
		setupAccess(t, map[string]string{path: credentialJSON})
		r := runCLI("", "grant", "credential", "g-1")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		out := r.stdout + r.stderr
		if strings.Count(out, password) != 1 {
			t.Errorf("output %q: want the password exactly once", out)
		}
		if !strings.Contains(out, "psql -h db1.internal -p 5432 -U w_alice_1") || !strings.Contains(out, "PGPASSFILE") {
			t.Errorf("output %q: want a psql hint and PGPASSFILE", out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, password) && strings.Join(strings.Fields(line), " ") != "Password "+password {
				t.Errorf("the password is on line %q, want it only on its own Password line", line)
			}
		}
		if strings.Contains(out, "PGPASSWORD") || strings.Contains(out, "MYSQL_PWD") {
			t.Errorf("output %q suggests a password in the environment", out)
		}
	})
	t.Run("quoting", func(t *testing.T) {
		setupAccess(t, map[string]string{path: `{"target":"t","host":"db host","port":5432,"username":"o'x","password":"p","valid_until":"2030-01-01T02:10:00Z"}`})
		r := runCLI("", "grant", "credential", "g-1")
		if !strings.Contains(r.stdout, `psql -h 'db host' -p 5432 -U 'o'\''x'`) {
			t.Errorf("stdout %q: want shell-quoted host and user", r.stdout)
		}
	})
}

func TestGrants(t *testing.T) {
	f := setupAccess(t, map[string]string{
		"GET /v1/grants":             `{"grants":[` + activeGrant + `]}`,
		"POST /v1/grants/g-1/revoke": strings.Replace(activeGrant, `"active"`, `"revoked"`, 1),
		"POST /v1/grants/g-1/extend": strings.Replace(pendingRequest, `"activation"`, `"extension"`, 1),
	})
	r := runCLI("", "grant", "ls", "--mine", "--active")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ID ROLE PRINCIPAL STATUS EXPIRES" ||
		!strings.Contains(lines[1], "g-1") || !strings.Contains(lines[1], "user:alice") {
		t.Errorf("grant ls: exit %d, stdout %q", r.code, r.stdout)
	}
	if calls := f.called("GET /v1/grants"); len(calls) != 1 || calls[0].query != "active=1&mine=1" {
		t.Errorf("grant ls calls %+v", calls)
	}
	if r := runCLI("", "grant", "revoke", "g-1", "--reason", "done"); r.code != 0 || !strings.Contains(r.stdout, "revoked") {
		t.Errorf("revoke: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if calls := f.called("POST /v1/grants/g-1/revoke"); len(calls) != 1 || calls[0].body["reason"] != "done" {
		t.Errorf("revoke calls %+v", calls)
	}
	r = runCLI("", "grant", "extend", "g-1", "--ttl", "1h", "--ticket", "INC-43", "--format", "json")
	var req map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &req); r.code != 0 || err != nil || req["kind"] != "extension" || req["id"] != "rq-1" {
		t.Errorf("extend: exit %d, stdout %q (%v)", r.code, r.stdout, err)
	}
	want := map[string]any{"ttl": "1h0m0s", "ticket": "INC-43"}
	if calls := f.called("POST /v1/grants/g-1/extend"); len(calls) != 1 || !reflect.DeepEqual(calls[0].body, want) {
		t.Errorf("extend calls %+v, want body %v", calls, want)
	}
	for _, args := range [][]string{
		{"grant", "extend", "g-1"},
		{"grant", "revoke"},
		{"grant", "credential"},
		{"request", "create", "--ttl", "1h"},
		{"request", "create", "--role", "prod-dba"},
		{"request", "show"},
	} {
		if r := runCLI("", args...); r.code != 2 {
			t.Errorf("warder %s: exit %d, want 2; stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

func TestRoleReadCommands(t *testing.T) {
	f := setupAccess(t, map[string]string{
		"GET /v1/roles":             `{"roles":[` + roleJSON + `]}`,
		"GET /v1/roles/prod-dba":    roleJSON,
		"DELETE /v1/roles/prod-dba": "",
		"GET /v1/requests/rq-1":     pendingRequest,
	})
	r := runCLI("", "role", "ls", "--format", "jsonl")
	var role map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &role); r.code != 0 || err != nil || role["name"] != "prod-dba" {
		t.Errorf("role ls: exit %d, stdout %q (%v)", r.code, r.stdout, err)
	}
	if r := runCLI("", "role", "show", "prod-dba"); r.code != 0 || !strings.Contains(r.stdout, `resource in Target::"prod-pg"`) {
		t.Errorf("role show: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := runCLI("", "role", "rm", "prod-dba"); r.code != 0 || len(f.called("DELETE /v1/roles/prod-dba")) != 1 {
		t.Errorf("role rm: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI("", "request", "show", "rq-1"); r.code != 0 || !strings.Contains(r.stdout, "user:bob") || !strings.Contains(r.stdout, "INC-42") {
		t.Errorf("request show: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := runCLI("", "request", "show", "rq-2"); r.code != 1 || !strings.Contains(r.stderr, "no such endpoint") {
		t.Errorf("request show of an unknown id: exit %d, stderr %q", r.code, r.stderr)
	}
}
