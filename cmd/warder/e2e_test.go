package main

// End-to-end tests: the built binary, driven as an operator would drive it,
// against the embedded store and a real PostgreSQL.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/warderhq/warder/internal/testenv"
)

var warderBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warder-e2e-")
	if err != nil {
		panic(err)
	}
	warderBin = filepath.Join(dir, "warder")
	build := exec.Command("go", "build", "-o", warderBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build warder: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	testenv.StopPostgresSCRAM() // started by the vault tests
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running warder server.
type proc struct {
	cmd    *exec.Cmd
	url    string
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var urlPattern = regexp.MustCompile(`https://127\.0\.0\.1:[0-9]+`)

// start runs `warder args...` and waits until it prints its address.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables (KEY=VALUE).
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	if len(args) > 0 && args[0] == "dev" && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--ssh-listen") }) {
		// Dev mode's SSH gateway port 2222 would collide between tests.
		args = append(args, "--ssh-listen=")
	}
	if len(args) > 0 && args[0] == "dev" && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--db-listen") }) {
		// Likewise the database gateway's 7432.
		args = append(args, "--db-listen=")
	}
	p.cmd = exec.Command(warderBin, args...)
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := urlPattern.FindString(p.stdout.String() + p.stderr.String()); m != "" && strings.Contains(p.stdout.String()+p.stderr.String(), "listening") {
			p.url = m
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("warder %s exited early: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, p.stdout, p.stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("warder did not report its address\nstderr:\n%s", p.stderr)
	return nil
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("warder exited with %v after SIGTERM\nstderr:\n%s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("warder did not stop within 30s of SIGTERM")
	}
}

// cleanEnv is the environment without any WARDER_ variable of the caller.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARDER_") {
			env = append(env, kv)
		}
	}
	return env
}

// result of one CLI run.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI against a server with env (KEY=VALUE pairs) and stdin.
func run(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, warderBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run warder %v: %v", args, err)
	}
	return r
}

func mustOK(t *testing.T, r result, what string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

type status struct {
	Initialized bool `json:"initialized"`
	Sealed      bool `json:"sealed"`
	Progress    int  `json:"progress"`
	Threshold   int  `json:"threshold"`
}

type event struct {
	Seq     int64  `json:"seq"`
	Actor   string `json:"actor"`
	Action  string `json:"action"`
	Outcome string `json:"outcome"`
}

func TestDevQuickstart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if !strings.Contains(p.stdout.String(), "export WARDER_CACERT=") {
		t.Errorf("dev mode did not say how to point the CLI at it:\n%s", p.stdout)
	}
	fi, err := os.Stat(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode = %v, want 0600", fi.Mode().Perm())
	}
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	env := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem"), "WARDER_TOKEN=" + strings.TrimSpace(string(token))}

	st := decodeJSON[status](t, mustOK(t, run(t, env, "", "operator", "status", "--format", "json"), "status").stdout)
	if !st.Initialized || st.Sealed {
		t.Fatalf("dev server status = %+v, want initialized and unsealed", st)
	}
	mustOK(t, run(t, env, "", "audit", "verify"), "audit verify")

	// Without the CA the client refuses the server's certificate.
	r := run(t, []string{"WARDER_ADDR=" + p.url, "WARDER_TOKEN=x"}, "", "operator", "status")
	if r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("status without CA: exit %d, stderr %q; want a certificate error", r.code, r.stderr)
	}

	// A restart keeps everything: same token, unsealed again.
	p.stop(t)
	p = start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	env[0] = "WARDER_ADDR=" + p.url
	evs := decodeJSON[[]event](t, mustOK(t, run(t, env, "", "audit", "ls", "--action", "sys.unseal", "--format", "json"), "audit ls").stdout)
	if len(evs) < 2 {
		t.Errorf("after restart, %d sys.unseal events, want at least 2", len(evs))
	}
	mustOK(t, run(t, env, "", "audit", "verify"), "audit verify after restart")
}

type initResult struct {
	Shares     []string `json:"shares"`
	AdminToken string   `json:"admin_token"`
}

// operatorFlow initialises and unseals a fresh server and checks the
// sealed behaviour on the way. It returns the CLI environment.
func operatorFlow(t *testing.T, p *proc, caFile, keyFile string) ([]string, initResult) {
	t.Helper()
	env := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + caFile}
	st := decodeJSON[status](t, mustOK(t, run(t, env, "", "operator", "status", "--format", "json"), "status").stdout)
	if st.Initialized || !st.Sealed {
		t.Fatalf("new server status = %+v, want uninitialised and sealed", st)
	}
	r := run(t, append(env, "WARDER_TOKEN=wt1.000000000000000000.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "", "audit", "ls")
	if r.code == 0 || !strings.Contains(r.stderr, "sealed") {
		t.Fatalf("audit ls on a sealed server: exit %d, stderr %q; want a sealed error", r.code, r.stderr)
	}

	args := []string{"operator", "init", "--shares", "5", "--threshold", "3", "--format", "json"}
	if keyFile != "" {
		args = append(args, "--key-file", keyFile)
	}
	ir := decodeJSON[initResult](t, mustOK(t, run(t, env, "", args...), "init").stdout)
	if len(ir.Shares) != 5 || ir.AdminToken == "" {
		t.Fatalf("init returned %d shares, token %v", len(ir.Shares), ir.AdminToken != "")
	}
	if r := run(t, env, "", args[:len(args)-2]...); r.code == 0 || !strings.Contains(r.stderr, "already initialized") {
		t.Errorf("second init: exit %d, stderr %q", r.code, r.stderr)
	}

	// Two shares: still sealed, progress 2.
	st = decodeJSON[status](t, mustOK(t, run(t, env, ir.Shares[0]+"\n"+ir.Shares[3]+"\n", "operator", "unseal", "--format", "json"), "unseal 2").stdout)
	if !st.Sealed || st.Progress != 2 || st.Threshold != 3 {
		t.Fatalf("after two shares: %+v", st)
	}
	// A damaged share is refused and progress is kept.
	bad := []byte(ir.Shares[1])
	bad[len(bad)/2] ^= 1
	if r := run(t, env, string(bad)+"\n", "operator", "unseal"); r.code == 0 {
		t.Errorf("damaged share accepted")
	}
	st = decodeJSON[status](t, mustOK(t, run(t, env, ir.Shares[4]+"\n", "operator", "unseal", "--format", "json"), "unseal 3").stdout)
	if st.Sealed {
		t.Fatalf("after three shares still sealed: %+v", st)
	}
	return append(env, "WARDER_TOKEN="+ir.AdminToken), ir
}

func TestServerSQLite(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "unseal.key")
	p := start(t, "server", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if !strings.Contains(p.stderr.String(), "generated") {
		t.Errorf("server did not log that it generated its TLS certificate:\n%s", p.stderr)
	}
	env, _ := operatorFlow(t, p, filepath.Join(dir, "ca.pem"), keyFile)

	if r := run(t, append(env[:2:2], "WARDER_TOKEN=wt1.000000000000000000.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "", "audit", "ls"); r.code == 0 || !strings.Contains(r.stderr, "invalid or expired token") {
		t.Errorf("audit ls with a bad token: exit %d, stderr %q", r.code, r.stderr)
	}
	rk := decodeJSON[map[string]int](t, mustOK(t, run(t, env, "", "operator", "rotate-key", "--format", "json"), "rotate-key").stdout)
	if rk["key_version"] != 2 {
		t.Errorf("rotate-key: %v, want key_version 2", rk)
	}
	evs := decodeJSON[[]event](t, mustOK(t, run(t, env, "", "audit", "ls", "--format", "json", "--limit", "1000"), "audit ls").stdout)
	seen := map[string]bool{}
	for _, ev := range evs {
		seen[ev.Action+"/"+ev.Outcome] = true
	}
	for _, want := range []string{"sys.init/success", "sys.unseal/success", "sys.unseal/failure", "sys.rotate_key/success", "authz.decide/allow", "auth.request/deny"} {
		if !seen[want] {
			t.Errorf("no %s event in the audit trail", want)
		}
	}
	exp := mustOK(t, run(t, env, "", "audit", "export", "--format", "jsonl"), "export").stdout
	if n := strings.Count(exp, "\n"); n < len(evs) {
		t.Errorf("export has %d lines, ls had %d events", n, len(evs))
	}
	mustOK(t, run(t, env, "", "audit", "verify"), "verify")

	// Seal: data operations answer "sealed".
	mustOK(t, run(t, env, "", "operator", "seal"), "seal")
	if r := run(t, env, "", "audit", "ls"); r.code == 0 || !strings.Contains(r.stderr, "sealed") {
		t.Errorf("audit ls after seal: exit %d, stderr %q", r.code, r.stderr)
	}
	p.stop(t)

	// A wrong key file stops the start with a clear error.
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	os.WriteFile(wrong, []byte("not a key\n"), 0o600)
	r := run(t, nil, "", "server", "--data-dir", dir, "--listen", "127.0.0.1:0", "--unseal-key-file", wrong)
	if r.code == 0 || !strings.Contains(r.stderr, "unseal key") {
		t.Errorf("start with a wrong key file: exit %d, stderr %q", r.code, r.stderr)
	}

	// Tamper with one event in the file, then restart with the key file.
	db, err := sql.Open("sqlite", filepath.Join(dir, "warder.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_events SET actor = 'mallory' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	p = start(t, "server", "--data-dir", dir, "--listen", "127.0.0.1:0", "--unseal-key-file", keyFile)
	env[0] = "WARDER_ADDR=" + p.url
	r = run(t, env, "", "audit", "verify")
	if r.code == 0 || !strings.Contains(r.stderr, "event 3") {
		t.Errorf("verify after tampering: exit %d, stderr %q; want failure naming event 3", r.code, r.stderr)
	}
}

func TestServerPostgres(t *testing.T) {
	url := testenv.PostgresURL(t)
	dir := t.TempDir()
	p := startEnv(t, []string{"WARDER_STORAGE=" + url}, "server", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if strings.Contains(p.stderr.String()+p.stdout.String(), "warder_test:warder_test") {
		t.Errorf("the storage URL's password reached the log")
	}
	env, ir := operatorFlow(t, p, filepath.Join(dir, "ca.pem"), "")
	mustOK(t, run(t, env, "", "audit", "verify"), "verify")

	// A second server process on the same database, unsealed separately,
	// appends to the same chain.
	dir2 := t.TempDir()
	p2 := startEnv(t, []string{"WARDER_STORAGE=" + url}, "server", "--data-dir", dir2, "--listen", "127.0.0.1:0")
	env2 := []string{"WARDER_ADDR=" + p2.url, "WARDER_CACERT=" + filepath.Join(dir2, "ca.pem"), "WARDER_TOKEN=" + ir.AdminToken}
	mustOK(t, run(t, env2, strings.Join(ir.Shares[:3], "\n"), "operator", "unseal"), "unseal second")
	type report struct {
		OK     bool  `json:"ok"`
		Events int64 `json:"events"`
	}
	before := decodeJSON[report](t, mustOK(t, run(t, env, "", "audit", "verify", "--format", "json"), "verify before").stdout)
	var wg sync.WaitGroup
	for _, e := range [][]string{env, env2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if r := run(t, e, "", "audit", "ls", "--limit", "1"); r.code != 0 {
					t.Errorf("audit ls during concurrent writes: exit %d: %s", r.code, r.stderr)
				}
			}
		}()
	}
	wg.Wait()
	after := decodeJSON[report](t, mustOK(t, run(t, env, "", "audit", "verify", "--format", "json"), "verify after two writers").stdout)
	// Each authorised request appends at least its decision.
	if !after.OK || after.Events < before.Events+20 {
		t.Errorf("after 20 requests through two servers: %+v, before %+v", after, before)
	}

	// Edit a row directly in PostgreSQL.
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM audit_events WHERE seq = 5`); err != nil {
		t.Fatal(err)
	}
	r := run(t, env2, "", "audit", "verify")
	if r.code == 0 || !strings.Contains(r.stderr, "event 5") {
		t.Errorf("verify after deleting event 5: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestBadConfigAndData(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "warder.yaml")
	os.WriteFile(cfgFile, []byte("lisen: 127.0.0.1:8200\n"), 0o600)
	r := run(t, nil, "", "server", "--config", cfgFile)
	if r.code == 0 || !strings.Contains(r.stderr, "lisen") {
		t.Errorf("unknown config key: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, []string{"WARDER_LISTEN=nonsense"}, "", "server", "--data-dir", dir)
	if r.code == 0 || !strings.Contains(r.stderr, "listen") {
		t.Errorf("bad WARDER_LISTEN: exit %d, stderr %q", r.code, r.stderr)
	}

	// A corrupt database file is refused and left as it was.
	garbage := bytes.Repeat([]byte("warder!!"), 1024)
	os.WriteFile(filepath.Join(dir, "warder.db"), garbage, 0o600)
	r = run(t, nil, "", "server", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "corrupt") {
		t.Errorf("corrupt database: exit %d, stderr %q", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "warder.db")); !bytes.Equal(got, garbage) {
		t.Errorf("the corrupt database file was modified")
	}
}
