package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/client"
)

// vaultRequest is a request the fake vault received.
type vaultRequest struct {
	method, path, query string
	body                map[string]any
}

// fakeVault answers the vault routes from a table of canned answers keyed
// by "METHOD /path"; an answer is the status and the JSON body. It records
// every request.
type fakeVault struct {
	answers map[string][]answer // served in order; the last one repeats

	mu   sync.Mutex // protects reqs and served
	reqs []vaultRequest
	seen map[string]int
}

type answer struct {
	status int
	body   string
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	b, _ := io.ReadAll(r.Body)
	json.Unmarshal(b, &body)
	key := r.Method + " " + r.URL.EscapedPath()
	f.mu.Lock()
	f.reqs = append(f.reqs, vaultRequest{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body})
	as := f.answers[key]
	i := min(f.seen[key], len(as)-1)
	f.seen[key]++
	f.mu.Unlock()
	if len(as) == 0 {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"code":"not_found","message":"api: no such endpoint","request_id":"r1"}}`)
		return
	}
	if as[i].status != 0 {
		w.WriteHeader(as[i].status)
	}
	io.WriteString(w, as[i].body)
}

// requests returns the recorded requests to key ("METHOD /path").
func (f *fakeVault) requests(key string) []vaultRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []vaultRequest
	for _, r := range f.reqs {
		if r.method+" "+r.path == key {
			out = append(out, r)
		}
	}
	return out
}

// setupVault starts a fake vault serving answers and points the CLI at it
// with an admin token.
func setupVault(t *testing.T, answers map[string][]answer) *fakeVault {
	t.Helper()
	f := &fakeVault{answers: answers, seen: map[string]int{}}
	serveCLI(t, f, "wt1.admin")
	return f
}

func ok(body string) []answer { return []answer{{200, body}} }

const leaseJSON = `"lease_id":"l-1","account":"prod/postgres","holder":"user:alice","reason":"INC-1 fix","ticket":"INC-1","checked_out_at":"2030-01-01T00:00:00Z","expires_at":"2030-01-01T01:00:00Z"`

func TestCheckout(t *testing.T) {
	const path = "POST /v1/accounts/prod/postgres/checkout"
	t.Run("json", func(t *testing.T) {
		f := setupVault(t, map[string][]answer{path: ok(`{` + leaseJSON + `,"password":"pw1"}`)})
		r := runCLI("", "checkout", "prod/postgres", "--reason", "INC-1 fix", "--ticket", "INC-1", "--ttl", "1h", "--format", "json")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("output %q: %v", r.stdout, err)
		}
		want := map[string]any{"lease_id": "l-1", "account": "prod/postgres", "holder": "user:alice", "reason": "INC-1 fix", "ticket": "INC-1",
			"checked_out_at": "2030-01-01T00:00:00Z", "expires_at": "2030-01-01T01:00:00Z", "password": "pw1"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("json = %v, want exactly %v", got, want)
		}
		reqs := f.requests(path)
		if wantBody := map[string]any{"reason": "INC-1 fix", "ticket": "INC-1", "ttl": "1h0m0s"}; len(reqs) != 1 || !reflect.DeepEqual(reqs[0].body, wantBody) {
			t.Errorf("requests %+v, want one with body %v", reqs, wantBody)
		}
	})
	t.Run("private key json", func(t *testing.T) {
		setupVault(t, map[string][]answer{path: ok(`{` + leaseJSON + `,"private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"}`)})
		r := runCLI("", "checkout", "prod/postgres", "--reason", "x", "--format", "json")
		var got map[string]any
		json.Unmarshal([]byte(r.stdout), &got)
		if _, has := got["password"]; has || got["private_key"] == nil || got["lease_id"] != "l-1" {
			t.Errorf("json = %v: want private_key and no password", got)
		}
	})
	t.Run("table", func(t *testing.T) {
		setupVault(t, map[string][]answer{path: ok(`{` + leaseJSON + `,"password":"pw1"}`)})
		r := runCLI("", "checkout", "prod/postgres", "--reason", "x")
		if r.code != 0 || strings.Count(r.stdout, "pw1") != 1 || !strings.Contains(r.stdout, "l-1") || !strings.Contains(r.stdout, "Expires") {
			t.Errorf("exit %d, stdout %q: want the password once with the lease and expiry", r.code, r.stdout)
		}
	})
	t.Run("wait", func(t *testing.T) {
		f := setupVault(t, map[string][]answer{
			path: {{409, `{"error":{"code":"conflict","message":"vault: prod/postgres is checked out by user:bob until 10:00","request_id":"r"}}`},
				{200, `{` + leaseJSON + `,"password":"pw1"}`}},
			"GET /v1/leases": ok(`{"leases":[],"waiting":[{"account":"prod/postgres","principal":"user:carol","enqueued_at":"2030-01-01T00:00:00Z","position":1}]}`),
		})
		r := runCLI("", "checkout", "prod/postgres", "--reason", "x", "--wait", "--format", "json")
		if r.code != 0 || !strings.Contains(r.stderr, "waiting for prod/postgres (position 2)") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		reqs := f.requests(path)
		if len(reqs) != 2 || reqs[0].body["wait"] != nil || reqs[1].body["wait"] != true {
			t.Errorf("requests %+v: want a plain attempt, then one with wait", reqs)
		}
		if q := f.requests("GET /v1/leases"); len(q) != 1 || q[0].query != "account=prod%2Fpostgres" {
			t.Errorf("leases requests %+v", q)
		}
	})
	t.Run("conflict without wait", func(t *testing.T) {
		setupVault(t, map[string][]answer{path: {{409, `{"error":{"code":"conflict","message":"vault: prod/postgres is checked out by user:bob until 10:00","request_id":"r"}}`}}})
		r := runCLI("", "checkout", "prod/postgres", "--reason", "x")
		if r.code != 1 || !strings.Contains(r.stderr, "user:bob") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

func TestCheckoutSubcommands(t *testing.T) {
	f := setupVault(t, map[string][]answer{
		"GET /v1/leases":                          ok(`{"leases":[{` + leaseJSON + `}],"waiting":[{"account":"prod/postgres","principal":"user:carol","enqueued_at":"2030-01-01T00:00:00Z","position":1}]}`),
		"POST /v1/leases/l-1/extend":              ok(`{` + leaseJSON + `}`),
		"POST /v1/leases/l-1/force-checkin":       ok(`{` + leaseJSON + `,"ended_at":"2030-01-01T00:30:00Z","end_reason":"forced"}`),
		"POST /v1/accounts/prod/postgres/checkin": ok(`{` + leaseJSON + `,"ended_at":"2030-01-01T00:30:00Z","end_reason":"checkin"}`),
	})
	r := runCLI("", "checkout", "ls", "--account", "prod/postgres", "--format", "json")
	var ll struct {
		Leases  []map[string]any `json:"leases"`
		Waiting []map[string]any `json:"waiting"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ll); r.code != 0 || err != nil || len(ll.Leases) != 1 || len(ll.Waiting) != 1 {
		t.Errorf("checkout ls: exit %d, stdout %q (%v)", r.code, r.stdout, err)
	}
	r = runCLI("", "checkout", "ls")
	if r.code != 0 || !strings.Contains(r.stdout, "user:alice") || !strings.Contains(r.stdout, "user:carol") || strings.Contains(r.stdout, "pw") {
		t.Errorf("checkout ls table: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := runCLI("", "checkout", "extend", "l-1", "--ttl", "30m"); r.code != 0 {
		t.Errorf("extend: exit %d, stderr %q", r.code, r.stderr)
	}
	if reqs := f.requests("POST /v1/leases/l-1/extend"); len(reqs) != 1 || reqs[0].body["ttl"] != "30m0s" {
		t.Errorf("extend requests %+v", reqs)
	}
	if r := runCLI("", "checkout", "force-checkin", "l-1"); r.code != 0 {
		t.Errorf("force-checkin: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI("", "checkin", "prod/postgres"); r.code != 0 || !strings.Contains(r.stdout, "l-1") {
		t.Errorf("checkin: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{
		{"checkout"},
		{"checkout", "prod/postgres"},               // no reason
		{"checkout", "lss", "--reason", "x"},        // neither a subcommand nor TARGET/USER
		{"checkout", "prod/", "--reason", "x"},      // no user
		{"checkout", "a/b", "c/d", "--reason", "x"}, // two accounts
		{"checkout", "extend", "l-1"},               // no ttl
		{"checkin", "postgres"},                     // not TARGET/USER
		{"checkout", "prod/postgres", "--reason", "x", "--ttl", "-1h"},
	} {
		if r := runCLI("", args...); r.code != 2 {
			t.Errorf("warder %s: exit %d, want 2; stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

func TestRun(t *testing.T) {
	setupVault(t, map[string][]answer{
		"GET /v1/secrets/app/db":    ok(`{"path":"app/db","version":3,"created_at":"2030-01-01T00:00:00Z","keys":["DB_PASSWORD","DB_USER"],"data":{"DB_PASSWORD":"s3cret","DB_USER":"app"}}`),
		"GET /v1/secrets/app/other": ok(`{"path":"app/other","version":1,"created_at":"2030-01-01T00:00:00Z","keys":["DB_PASSWORD"],"data":{"DB_PASSWORD":"other"}}`),
		"GET /v1/secrets/app/api":   ok(`{"path":"app/api","version":1,"created_at":"2030-01-01T00:00:00Z","keys":["API_KEY"],"data":{"API_KEY":"k"}}`),
	})
	t.Setenv("DB_USER", "inherited")
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"env and exit code", []string{"--secret", "app/db", "--", "/bin/sh", "-c", `test "$DB_PASSWORD" = s3cret && exit 7`}, 7, ""},
		{"secret replaces inherited", []string{"--secret", "app/db", "--", "/bin/sh", "-c", `test "$DB_USER" = app`}, 0, ""},
		{"two secrets", []string{"--secret", "app/db", "--secret", "app/api", "--", "/bin/sh", "-c", `test "$API_KEY$DB_USER" = kapp`}, 0, ""},
		{"stdout passes through", []string{"--secret", "app/db", "--", "/bin/sh", "-c", `echo "len ${#DB_PASSWORD}"`}, 0, "len 6\n"},
		{"flags belong to the command", []string{"--secret", "app/db", "/bin/sh", "-c", `exit 3`}, 3, ""},
		{"signal", []string{"--secret", "app/db", "--", "/bin/sh", "-c", `kill -TERM $$`}, 143, ""},
		{"not found", []string{"--secret", "app/db", "--", "/nonexistent/cmd"}, 127, ""},
		{"same key twice", []string{"--secret", "app/db", "--secret", "app/other", "--", "/bin/true"}, 1, ""},
		{"no such secret", []string{"--secret", "app/none", "--", "/bin/true"}, 1, ""},
		{"no secret", []string{"--", "/bin/true"}, 2, ""},
		{"no command", []string{"--secret", "app/db"}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI("", append([]string{"run"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			if r.stdout != tc.wantOut {
				t.Errorf("stdout %q, want %q", r.stdout, tc.wantOut)
			}
			if strings.Contains(r.stdout+r.stderr, "s3cret") {
				t.Errorf("the secret value leaked: stdout %q, stderr %q", r.stdout, r.stderr)
			}
		})
	}
}

func TestSecretPut(t *testing.T) {
	const put = "PUT /v1/secrets/app/db"
	meta := ok(`{"path":"app/db","version":2,"created_at":"2030-01-01T00:00:00Z","keys":["A","B"]}`)
	for _, tc := range []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		wantData map[string]any
		wantWarn bool
	}{
		{"arguments warn", "", []string{"A=1", "B=x=y"}, 0, map[string]any{"A": "1", "B": "x=y"}, true},
		{"stdin lines", "# comment\nA=1\n\nB= two \r\n", []string{"--stdin"}, 0, map[string]any{"A": "1", "B": " two "}, false},
		{"stdin json", `{"A":"1","B":"line1\nline2"}`, []string{"--stdin"}, 0, map[string]any{"A": "1", "B": "line1\nline2"}, false},
		{"two sources", "A=1", []string{"--stdin", "B=2"}, 2, nil, false},
		{"no source", "", nil, 2, nil, false},
		{"not KEY=VALUE", "", []string{"hunter2"}, 2, nil, true},
		{"key twice", "A=1\nA=2\n", []string{"--stdin"}, 2, nil, false},
		{"bad json", `{"A":1}`, []string{"--stdin"}, 2, nil, false},
		{"empty stdin", "\n# nothing\n", []string{"--stdin"}, 2, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setupVault(t, map[string][]answer{put: meta})
			r := runCLI(tc.stdin, append([]string{"secret", "put", "app/db"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			if warned := strings.Contains(r.stderr, "Warning") && strings.Contains(r.stderr, "--from-file"); warned != tc.wantWarn {
				t.Errorf("stderr %q: warned %v, want %v", r.stderr, warned, tc.wantWarn)
			}
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("an error echoed the argument: %q", r.stderr)
			}
			reqs := f.requests(put)
			if tc.wantData == nil {
				if len(reqs) != 0 {
					t.Errorf("sent %+v", reqs)
				}
				return
			}
			if len(reqs) != 1 || !reflect.DeepEqual(reqs[0].body, map[string]any{"data": tc.wantData}) {
				t.Errorf("requests %+v, want data %v", reqs, tc.wantData)
			}
		})
	}

	t.Run("from file", func(t *testing.T) {
		f := setupVault(t, map[string][]answer{put: meta})
		file := filepath.Join(t.TempDir(), "app.env")
		os.WriteFile(file, []byte("A=1\nB=2\n"), 0o600)
		if r := runCLI("", "secret", "put", "app/db", "--from-file", file); r.code != 0 || r.stderr != "" {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if reqs := f.requests(put); len(reqs) != 1 || !reflect.DeepEqual(reqs[0].body["data"], map[string]any{"A": "1", "B": "2"}) {
			t.Errorf("requests %+v", reqs)
		}
	})
}

func TestSecretGet(t *testing.T) {
	f := setupVault(t, map[string][]answer{
		"GET /v1/secrets/app/db": ok(`{"path":"app/db","version":1,"created_at":"2030-01-01T00:00:00Z","keys":["A"],"data":{"A":"1"}}`),
	})
	r := runCLI("", "secret", "get", "app/db", "--version", "1", "--format", "json")
	var got map[string]any
	json.Unmarshal([]byte(r.stdout), &got)
	want := map[string]any{"path": "app/db", "version": 1.0, "created_at": "2030-01-01T00:00:00Z", "keys": []any{"A"}, "data": map[string]any{"A": "1"}}
	if r.code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d, json %v, want %v", r.code, got, want)
	}
	if reqs := f.requests("GET /v1/secrets/app/db"); len(reqs) != 1 || reqs[0].query != "version=1" {
		t.Errorf("requests %+v", reqs)
	}
}

func TestAccountAdd(t *testing.T) {
	const add = "POST /v1/accounts"
	acct := ok(`{"id":"prod/postgres","target":"prod","username":"postgres","kind":"password","max_checkouts":1,"rotate_on_checkin":false,"rotate_every":"24h0m0s","status":"unverified","credential_version":1,"has_pending":false,"rotation_due":false,"created_at":"2030-01-01T00:00:00Z"}`)
	t.Run("password stdin", func(t *testing.T) {
		f := setupVault(t, map[string][]answer{add: acct})
		r := runCLI("hunter2 with spaces\n", "account", "add", "prod/postgres", "--password-stdin", "--max-checkouts", "2",
			"--rotate-every", "24h", "--no-rotate-on-checkin", "--password-length", "20", "--password-forbid", `'"`,
			"--dependent", "target=app1,path=/etc/app.env,match=^DB_PASSWORD=,template=DB_PASSWORD={{password}},restart=systemctl restart app", "--format", "json")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		want := map[string]any{
			"target": "prod", "username": "postgres", "password": "hunter2 with spaces", "max_checkouts": 2.0,
			"rotate_every": "24h0m0s", "rotate_on_checkin": false,
			"password_policy": map[string]any{"length": 20.0, "lower": false, "upper": false, "digits": false, "symbols": false, "forbidden": `'"`},
			"dependents":      []any{map[string]any{"target": "app1", "path": "/etc/app.env", "match": "^DB_PASSWORD=", "template": "DB_PASSWORD={{password}}", "restart": "systemctl restart app"}},
		}
		if reqs := f.requests(add); len(reqs) != 1 || !reflect.DeepEqual(reqs[0].body, want) {
			t.Errorf("requests %+v,\nwant body %v", reqs, want)
		}
		if strings.Contains(r.stdout, "hunter2") {
			t.Errorf("the output shows the password: %q", r.stdout)
		}
	})
	t.Run("generate", func(t *testing.T) {
		f := setupVault(t, map[string][]answer{add: acct})
		if r := runCLI("", "account", "add", "prod/postgres", "--generate"); r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if reqs := f.requests(add); len(reqs) != 1 || !reflect.DeepEqual(reqs[0].body, map[string]any{"target": "prod", "username": "postgres", "generate": true}) {
			t.Errorf("requests %+v", reqs)
		}
	})
	t.Run("private key file", func(t *testing.T) {
		f := setupVault(t, map[string][]answer{add: acct})
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		blk, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		key := string(pem.EncodeToMemory(blk))
		file := filepath.Join(t.TempDir(), "id")
		os.WriteFile(file, []byte(key), 0o600)
		if r := runCLI("", "account", "add", "web/deploy", "--private-key-file", file); r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		want := map[string]any{"target": "web", "username": "deploy", "kind": "ssh_key", "private_key": key}
		if reqs := f.requests(add); len(reqs) != 1 || !reflect.DeepEqual(reqs[0].body, want) {
			t.Errorf("requests %+v, want body %v", reqs, want)
		}
		os.WriteFile(file, []byte("not a key"), 0o600)
		if r := runCLI("", "account", "add", "web/deploy", "--private-key-file", file); r.code != 2 || strings.Contains(r.stderr, "not a key") {
			t.Errorf("bad key file: exit %d, stderr %q", r.code, r.stderr)
		}
	})
	setupVault(t, map[string][]answer{add: acct})
	for _, tc := range []struct {
		stdin string
		args  []string
	}{
		{"", []string{"prod/postgres", "--password-stdin"}}, // empty stdin
		{"pw", []string{"prod/postgres"}},                   // no source
		{"pw", []string{"prod/postgres", "--password-stdin", "--generate"}},
		{"pw", []string{"postgres", "--password-stdin"}},
		{"pw", []string{"prod/postgres", "--password", "pw"}}, // never an argument
		{"pw", []string{"prod/postgres", "--password-stdin", "--dependent", "target=a,path=/x"}},
		{"pw", []string{"prod/postgres", "--password-stdin", "--password-classes", "emoji"}},
		{"pw", []string{"prod/postgres", "--password-stdin", "--kind", "ssh_key"}},
		{"pw", []string{"prod/postgres", "--password-stdin", "--rotate-every", "daily"}},
	} {
		if r := runCLI(tc.stdin, append([]string{"account", "add"}, tc.args...)...); r.code != 2 {
			t.Errorf("account add %s: exit %d, want 2; stderr %q", strings.Join(tc.args, " "), r.code, r.stderr)
		}
	}
}

func TestRotateAndVerify(t *testing.T) {
	setupVault(t, map[string][]answer{
		"POST /v1/targets/prod/rotate":    ok(`{"results":[{"account":"prod/a","outcome":"rotated","version":4},{"account":"prod/b","outcome":"rotated","version":2,"failed_dependents":["app1:/etc/app.env: permission denied"]},{"account":"prod/c","outcome":"out_of_sync","version":3}],"error":"rotation: prod/c is out of sync"}`),
		"POST /v1/targets/dev/rotate":     ok(`{"results":[{"account":"dev/a","outcome":"rotated","version":4}]}`),
		"POST /v1/accounts/prod/a/verify": ok(`{"account":"prod/a","ok":true,"status":"ok"}`),
		"POST /v1/accounts/prod/c/verify": ok(`{"account":"prod/c","ok":false,"status":"out_of_sync"}`),
		"POST /v1/accounts/prod/a/rotate": ok(`{"account":"prod/a","outcome":"rotated","version":5}`),
	})
	r := runCLI("", "target", "rotate", "prod")
	if r.code != 1 || !strings.Contains(r.stdout, "permission denied") || !strings.Contains(r.stdout, "out_of_sync") || !strings.Contains(r.stderr, "2 of 3") {
		t.Errorf("target rotate with failures: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI("", "target", "rotate", "prod", "--format", "json")
	var tr client.TargetRotation
	if err := json.Unmarshal([]byte(r.stdout), &tr); err != nil || len(tr.Results) != 3 || tr.Error == "" || r.code != 1 {
		t.Errorf("target rotate json: exit %d, %q (%v)", r.code, r.stdout, err)
	}
	if r := runCLI("", "target", "rotate", "dev"); r.code != 0 {
		t.Errorf("target rotate: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI("", "account", "rotate", "prod/a"); r.code != 0 {
		t.Errorf("account rotate: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI("", "account", "verify", "prod/a"); r.code != 0 {
		t.Errorf("verify ok: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI("", "account", "verify", "prod/c", "--format", "json"); r.code != 1 || !strings.Contains(r.stdout, `"ok": false`) {
		t.Errorf("verify failing: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestTargetAdd(t *testing.T) {
	f := setupVault(t, map[string][]answer{"POST /v1/targets": ok(`{"name":"prod","kind":"postgres","host":"db","port":5432,"max_concurrent_rotations":4,"created_at":"2030-01-01T00:00:00Z"}`)})
	r := runCLI("", "target", "add", "postgres", "prod", "--host", "db", "--port", "5432", "--option", "sslmode=require", "--option", "database=x=y",
		"--management-account", "warder_admin", "--max-concurrent-rotations", "8")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	want := map[string]any{"name": "prod", "kind": "postgres", "host": "db", "port": 5432.0, "options": map[string]any{"sslmode": "require", "database": "x=y"},
		"management_account": "warder_admin", "max_concurrent_rotations": 8.0}
	if reqs := f.requests("POST /v1/targets"); len(reqs) != 1 || !reflect.DeepEqual(reqs[0].body, want) {
		t.Errorf("requests %+v, want %v", reqs, want)
	}
	for _, args := range [][]string{
		{"postgres", "prod", "--port", "5432"},
		{"postgres", "prod", "--host", "db"},
		{"postgres", "prod", "--host", "db", "--port", "5432", "--option", "novalue"},
		{"postgres", "prod", "--host", "db", "--port", "5432", "--option", "a=1", "--option", "a=2"},
		{"postgres", "--host", "db", "--port", "5432"},
	} {
		if r := runCLI("", append([]string{"target", "add"}, args...)...); r.code != 2 {
			t.Errorf("target add %s: exit %d, want 2", strings.Join(args, " "), r.code)
		}
	}
}

func TestParseDependent(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want client.Dependent
		ok   bool
	}{
		{"target=t,path=/p,match=^A=,template=A={{password}}", client.Dependent{Target: "t", Path: "/p", Match: "^A=", Template: "A={{password}}"}, true},
		{"template=A={{password}},match=^A=,restart=systemctl restart a,b,path=/p,target=t",
			client.Dependent{Target: "t", Path: "/p", Match: "^A=", Template: "A={{password}}", Restart: "systemctl restart a,b"}, true},
		{"target=t,path=/p,match=^A{1,2}=,template=A,B={{password}}", client.Dependent{Target: "t", Path: "/p", Match: "^A{1,2}=", Template: "A,B={{password}}"}, true},
		{"target=t,path=/p,match=^A=,template=A={{password}},restart=", client.Dependent{Target: "t", Path: "/p", Match: "^A=", Template: "A={{password}}"}, true},
		{"target=t,path=/p,match=^A=", client.Dependent{}, false},                      // no template
		{"target=t,path=/p,match=^A=,template=x,restrat=y", client.Dependent{}, false}, // unknown field
		{"target=t,target=u,path=/p,match=^A=,template=x", client.Dependent{}, false},  // twice
		{"/etc/app.env", client.Dependent{}, false},
		{"", client.Dependent{}, false},
	} {
		got, err := parseDependent(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseDependent(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseDependent(f *testing.F) {
	for _, s := range []string{
		"target=app1,path=/etc/app.env,match=^DB_PASSWORD=,template=DB_PASSWORD={{password}},restart=systemctl restart app",
		"target=t,path=/p,match=^A{1,2}=,template=A,B={{password}}",
		"restart=,target=,path=,match=,template=",
		"target=t,,path=/p,match=x,template=y,",
		"=,a=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDependent(s)
		if err != nil {
			return
		}
		if d.Target == "" || d.Path == "" || d.Match == "" || d.Template == "" {
			t.Fatalf("parseDependent(%q) = %+v without a required field", s, d)
		}
		// What parses formats back to something that parses the same.
		d2, err := parseDependent(formatDependent(d))
		if err != nil || d2 != d {
			t.Fatalf("parseDependent(%q) = %+v; formatted %q parses to %+v, %v", s, d, formatDependent(d), d2, err)
		}
		if !slices.ContainsFunc(dependentKeys, func(k string) bool { return strings.HasPrefix(s, k+"=") }) {
			t.Fatalf("parseDependent(%q) accepted a string not starting with a field", s)
		}
	})
}
