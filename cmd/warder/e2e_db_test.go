package main

// The database gateway end to end: a dev server with the gateway on, a
// real password-checked PostgreSQL, psql and pgx driven through `warder
// db connect`, `warder db proxy` and `warder db login`.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/testenv"
)

var (
	dbAddrPattern  = regexp.MustCompile(`database gateway listening"? addr=(\S+)`)
	proxyPortRegex = regexp.MustCompile(`listening on 127\.0\.0\.1:([0-9]+)`)
)

// dbEnv is a dev server with the database gateway in front of the SCRAM
// cluster.
type dbEnv struct {
	pg      *testenv.SCRAMCluster
	p       *proc
	dir     string   // the server's data directory
	gateway string   // host:port
	ca      string   // the CA file clients trust
	admin   []string // CLI environment of the admin
}

func newDBEnv(t *testing.T) *dbEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the SCRAM PostgreSQL cluster needs root to start")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql is not installed")
	}
	e := &dbEnv{pg: testenv.PostgresSCRAM(t), dir: filepath.Join(t.TempDir(), "dev")}
	e.p = start(t, "dev", "--data-dir", e.dir, "--listen", "127.0.0.1:0", "--db-listen", "127.0.0.1:0", "--session-recheck-interval", "1s")
	for deadline := time.Now().Add(10 * time.Second); e.gateway == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := dbAddrPattern.FindStringSubmatch(e.p.stderr.String()); m != nil {
			e.gateway = m[1]
		}
	}
	if e.gateway == "" {
		t.Fatalf("the dev server did not report its database gateway address\nstderr:\n%s", e.p.stderr)
	}
	e.ca = filepath.Join(e.dir, "ca.pem")
	token, _ := os.ReadFile(filepath.Join(e.dir, "admin.token"))
	e.admin = []string{"WARDER_ADDR=" + e.p.url, "WARDER_CACERT=" + e.ca, "WARDER_TOKEN=" + strings.TrimSpace(string(token))}
	return e
}

// user creates a user, logs it in, and returns its CLI environment (its
// own configuration directory) and that directory.
func (e *dbEnv) user(t *testing.T, name string) ([]string, string) {
	t.Helper()
	pw := name + "-long-passphrase"
	mustOK(t, run(t, e.admin, pw+"\n", "user", "create", name, "--password-stdin"), "create "+name)
	cfg := filepath.Join(t.TempDir(), name)
	env := []string{"WARDER_ADDR=" + e.p.url, "WARDER_CACERT=" + e.ca, "WARDER_CONFIG_DIR=" + cfg}
	r := mustOK(t, run(t, env, pw+"\n", "login", "--user", name, "--password-stdin"), name+" login")
	if strings.Contains(r.stderr, "Warning") {
		t.Errorf("%s login: %s", name, r.stderr)
	}
	return env, cfg
}

// policy stores a Cedar policy.
func (e *dbEnv) policy(t *testing.T, name, text string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".cedar")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, run(t, e.admin, "", "policy", "put", name, file), "policy put "+name)
}

// gatewayConfig is a pgx configuration for user at the gateway, TLS
// verified against the server's CA.
func (e *dbEnv) gatewayConfig(t *testing.T, user, password, sslmode string) *pgx.ConnConfig {
	t.Helper()
	host, port, _ := strings.Cut(e.gateway, ":")
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=%s sslrootcert=%s connect_timeout=10",
		host, port, user, sslmode, e.ca))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = password
	cfg.Fallbacks = nil
	return cfg
}

// bg is a CLI process running in the background.
type bg struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan error
}

func background(t *testing.T, env []string, args ...string) *bg {
	t.Helper()
	b := &bg{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	b.cmd = exec.Command(warderBin, args...)
	b.cmd.Env = append(cleanEnv(), env...)
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() {
		if b.cmd.ProcessState == nil {
			b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// wait waits up to d for the process to exit and returns its error.
func (b *bg) wait(t *testing.T, what string, d time.Duration) error {
	t.Helper()
	select {
	case err := <-b.done:
		return err
	case <-time.After(d):
		t.Fatalf("%s: still running after %v\nstdout: %s\nstderr: %s", what, d, b.stdout, b.stderr)
		return nil
	}
}

// dbSession is a session as `session ls --format json` prints it.
type dbSession struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Principal string `json:"principal"`
	Target    string `json:"target"`
	Account   string `json:"account"`
	GrantID   string `json:"grant_id"`
	LeaseID   string `json:"lease_id"`
	Status    string `json:"status"`
}

// waitSession polls the db sessions until one matches.
func (e *dbEnv) waitSession(t *testing.T, what string, match func(dbSession) bool) dbSession {
	t.Helper()
	var ss []dbSession
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ss = decodeJSON[[]dbSession](t, mustOK(t, run(t, e.admin, "", "session", "ls", "--kind", "db", "--format", "json"), "session ls").stdout)
		for _, s := range ss {
			if match(s) {
				return s
			}
		}
	}
	t.Fatalf("no db session %s: %+v", what, ss)
	return dbSession{}
}

func wantPgError(t *testing.T, what string, err error, code, msg string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code || !strings.Contains(pe.Message, msg) {
		t.Errorf("%s: error = %v; want SQLSTATE %s %q", what, err, code, msg)
	}
}

func TestDBGateway(t *testing.T) {
	e := newDBEnv(t)
	appPW := "App-pw-" + fmt.Sprint(time.Now().UnixNano())
	app := e.pg.CreateRole(t, appPW, "")
	mustOK(t, run(t, e.admin, "", "target", "add", "postgres", "pg", "--host", e.pg.Host, "--port", fmt.Sprint(e.pg.Port),
		"--option", "sslmode=prefer"), "target add") // the cluster has no TLS: prefer falls back
	mustOK(t, run(t, e.admin, appPW+"\n", "account", "add", "pg/"+app, "--password-stdin", "--no-rotate-on-checkin"), "account add")
	mustOK(t, run(t, e.admin, "", "target", "rule", "add", "pg", "--pattern", `(?i)drop\s+table`, "--action", "block"), "rule add")
	e.policy(t, "alice-pg", `permit(principal == User::"alice", action == Action::"connect", resource in Target::"pg");`)
	alice, aliceDir := e.user(t, "alice")
	for _, f := range []string{"db_client.key", "db_client.crt"} {
		if _, err := os.Stat(filepath.Join(aliceDir, f)); err != nil {
			t.Fatalf("login did not write %s: %v", f, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(aliceDir, "db_client.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("db_client.key mode %v, want 0600", fi.Mode().Perm())
	}
	ctx := context.Background()

	t.Run("connect with the client certificate", func(t *testing.T) {
		r := run(t, alice, "1\n2\n3\n\\.\n", "db", "connect", "pg", "--as", app, "--", "-X", "-Atq", "-v", "ON_ERROR_STOP=0",
			"-c", "select current_user", "-c", "create temp table e2e(a int)", "-c", "copy e2e from stdin",
			"-c", "select sum(a) from e2e", "-c", "copy (select a * 10 from e2e order by a) to stdout",
			"-c", "drop table e2e", "-c", "select count(*) from e2e")
		if want := app + "\n6\n10\n20\n30\n3\n"; r.stdout != want {
			t.Errorf("psql stdout %q, want %q\nstderr: %s", r.stdout, want, r.stderr)
		}
		if !strings.Contains(r.stderr, `warder: statement blocked by rule "(?i)drop\\s+table"`) {
			t.Errorf("psql stderr lacks the block: %s", r.stderr)
		}
		s := e.waitSession(t, "of alice's psql, closed", func(s dbSession) bool {
			return s.Principal == "user:alice" && s.Account == "pg/"+app && s.Status == "closed"
		})
		show := mustOK(t, run(t, e.admin, "", "session", "show", s.ID), "session show").stdout
		for _, want := range []string{"copy e2e from stdin", "COPY 3", "select sum(a) from e2e", `BLOCKED by (?i)drop\s+table`, "select current_user"} {
			if !strings.Contains(show, want) {
				t.Errorf("session show lacks %q:\n%s", want, show)
			}
		}
		type detail struct {
			Statements []struct {
				Time    *float64 `json:"time"`
				SQL     string   `json:"sql"`
				Tag     string   `json:"tag"`
				Blocked string   `json:"blocked"`
			} `json:"statements"`
		}
		d := decodeJSON[detail](t, mustOK(t, run(t, e.admin, "", "session", "show", s.ID, "--format", "json"), "session show json").stdout)
		if len(d.Statements) != 7 || d.Statements[0].Time == nil || d.Statements[2].Tag != "COPY 3" || d.Statements[5].Blocked == "" {
			t.Errorf("statements = %+v", d.Statements)
		}
		evs := mustOK(t, run(t, e.admin, "", "audit", "export"), "audit export").stdout
		if !strings.Contains(evs, `"auth":"certificate"`) {
			t.Error("no connect decision by certificate in the audit log")
		}
	})

	t.Run("connect with a database token", func(t *testing.T) {
		r := mustOK(t, run(t, alice, "", "db", "connect", "pg", "--as", app, "--use-token", "--", "-X", "-Atq", "-c", "select 40 + 2"), "db connect --use-token")
		if r.stdout != "42\n" {
			t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
		}
		if left, _ := filepath.Glob(filepath.Join(aliceDir, "psql-*")); len(left) != 0 {
			t.Errorf("temporary pgpass left behind: %v", left)
		}
		evs := mustOK(t, run(t, e.admin, "", "audit", "export"), "audit export").stdout
		if !strings.Contains(evs, `"auth":"password"`) || !strings.Contains(evs, `"auth.db_token.issue"`) {
			t.Error("the token's issue and use are not in the audit log")
		}
	})

	t.Run("db login", func(t *testing.T) {
		type login struct {
			Token, Host, User, Database, SSLRootCert string
			Port                                     int
			ExpiresAt                                time.Time `json:"expires_at"`
		}
		l := decodeJSON[login](t, mustOK(t, run(t, alice, "", "db", "login", "pg", "--as", app, "--format", "json"), "db login").stdout)
		if l.Token == "" || l.User != app+"@pg" || l.Database != "postgres" || l.SSLRootCert != e.ca || fmt.Sprintf("%s:%d", l.Host, l.Port) != e.gateway {
			t.Errorf("db login = %+v", l)
		}
		if d := time.Until(l.ExpiresAt); d > time.Hour || d < 50*time.Minute {
			t.Errorf("token expires in %v, want about an hour", d)
		}
		passfile := filepath.Join(aliceDir, "pgpass")
		if fi, err := os.Stat(passfile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("pgpass: %v, %v", fi, err)
		}
		// psql finds the token in the pgpass file: no password typed.
		psql := exec.Command("psql", "-X", "-Atq", "-w", "-c", "select current_user",
			fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=verify-full sslrootcert=%s passfile=%s", l.Host, l.Port, l.User, l.Database, l.SSLRootCert, passfile))
		psql.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		if out, err := psql.CombinedOutput(); err != nil || string(out) != app+"\n" {
			t.Errorf("psql with the pgpass file: %v\n%s", err, out)
		}
		// The table output says how to connect.
		table := mustOK(t, run(t, alice, "", "db", "login", "pg", "--as", app), "db login table").stdout
		if !strings.Contains(table, "passfile="+passfile) || !strings.Contains(table, "sslmode=verify-full") {
			t.Errorf("db login output:\n%s", table)
		}

		// The token cannot drive the API.
		r := run(t, []string{"WARDER_ADDR=" + e.p.url, "WARDER_CACERT=" + e.ca, "WARDER_TOKEN=" + l.Token}, "", "whoami")
		if r.code == 0 || !strings.Contains(r.stderr, "scoped to the database gateway") {
			t.Errorf("whoami with a db token: exit %d, stderr %q", r.code, r.stderr)
		}
		// Nor another account or the target alone.
		for _, user := range []string{"postgres@pg", "pg"} {
			_, err := pgx.ConnectConfig(ctx, e.gatewayConfig(t, user, l.Token, "verify-full"))
			wantPgError(t, "db token for "+user, err, "28000", "warder: this token is not valid for")
		}
		// A wrong token, and an expired one.
		_, err := pgx.ConnectConfig(ctx, e.gatewayConfig(t, app+"@pg", "wt1.not-a-token", "verify-full"))
		wantPgError(t, "wrong token", err, "28P01", "warder: authentication failed")
		short := decodeJSON[login](t, mustOK(t, run(t, alice, "", "db", "login", "pg", "--as", app, "--ttl", "1s", "--format", "json"), "db login 1s").stdout)
		time.Sleep(1500 * time.Millisecond)
		_, err = pgx.ConnectConfig(ctx, e.gatewayConfig(t, app+"@pg", short.Token, "verify-full"))
		wantPgError(t, "expired token", err, "28P01", "warder: authentication failed")
		// Plaintext is refused before any password is asked.
		_, err = pgx.ConnectConfig(ctx, e.gatewayConfig(t, app+"@pg", l.Token, "disable"))
		wantPgError(t, "plaintext", err, "28000", "warder: TLS is required")
	})

	t.Run("db proxy", func(t *testing.T) {
		px := background(t, alice, "db", "proxy", "pg", "--as", app, "--port", "0")
		var port string
		for deadline := time.Now().Add(15 * time.Second); port == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if m := proxyPortRegex.FindStringSubmatch(px.stderr.String()); m != nil {
				port = m[1]
			}
		}
		if port == "" {
			t.Fatalf("the proxy did not report its port\nstderr: %s", px.stderr)
		}
		if !strings.Contains(px.stderr.String(), "acts as you") {
			t.Errorf("the proxy does not warn that anyone on the port acts as the user:\n%s", px.stderr)
		}
		// pgx, extended protocol with parameters, no password, no TLS.
		conn, err := pgx.Connect(ctx, "host=127.0.0.1 port="+port+" user=whoever dbname=postgres sslmode=disable connect_timeout=10")
		if err != nil {
			t.Fatalf("pgx through the proxy: %v", err)
		}
		for i := range 2 { // the second time from the statement cache
			var n int
			var s, user string
			if err := conn.QueryRow(ctx, "select $1::int + 1, $2::text, current_user", 41+i, "x'y").Scan(&n, &s, &user); err != nil {
				t.Fatal(err)
			}
			if n != 42+i || s != "x'y" || user != app {
				t.Errorf("got %d, %q, %q", n, s, user)
			}
		}
		if _, err := conn.Exec(ctx, "create temp table px(a int, b text)"); err != nil {
			t.Fatal(err)
		}
		n, err := conn.CopyFrom(ctx, pgx.Identifier{"px"}, []string{"a", "b"}, pgx.CopyFromRows([][]any{{1, "a"}, {2, "b"}, {3, "c"}}))
		if err != nil || n != 3 {
			t.Errorf("COPY through the proxy: %d, %v", n, err)
		}
		_, err = conn.Exec(ctx, "drop table px")
		wantPgError(t, "blocked through the proxy", err, "42501", "blocked by rule")
		var count int
		if err := conn.QueryRow(ctx, "select count(*) from px").Scan(&count); err != nil || count != 3 {
			t.Errorf("after the block: %d, %v", count, err)
		}
		// Eight more connections at once, as pgbench -c 8 opens them,
		// while the first is open: they share alice's one check-out of the
		// exclusive account.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				c, err := pgx.Connect(ctx, "host=127.0.0.1 port="+port+" user=whoever dbname=postgres sslmode=disable connect_timeout=10")
				if err != nil {
					errs <- err
					return
				}
				defer c.Close(ctx)
				var user string
				if err := c.QueryRow(ctx, "select current_user").Scan(&user); err != nil || user != app {
					errs <- fmt.Errorf("current_user %q, %v", user, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("a concurrent connection through the proxy: %v", err)
		}
		conn.Close(ctx)
		// psql with no password and no TLS.
		psql := exec.Command("psql", "-X", "-Atq", "-w", "-c", "select current_user", "host=127.0.0.1 port="+port+" sslmode=disable")
		psql.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "PGUSER=whoever"}
		if out, err := psql.CombinedOutput(); err != nil || string(out) != app+"\n" {
			t.Errorf("psql through the proxy: %v\n%s", err, out)
		}
		px.cmd.Process.Signal(syscall.SIGTERM)
		if err := px.wait(t, "proxy after SIGTERM", 10*time.Second); err != nil {
			t.Errorf("proxy exit: %v\nstderr: %s", err, px.stderr)
		}
	})

	t.Run("session kill", func(t *testing.T) {
		b := background(t, alice, "db", "connect", "pg", "--as", app, "--", "-X", "-c", "select pg_sleep(60)")
		s := e.waitSession(t, "active for pg_sleep", func(s dbSession) bool { return s.Principal == "user:alice" && s.Status == "active" })
		mustOK(t, run(t, e.admin, "", "session", "kill", s.ID, "--message", "e2e maintenance"), "session kill")
		if err := b.wait(t, "psql after the kill", 15*time.Second); err == nil {
			t.Error("psql succeeded after its session was killed")
		}
		if !strings.Contains(b.stderr.String(), "warder: e2e maintenance") {
			t.Errorf("psql stderr lacks the kill message:\n%s", b.stderr)
		}
		e.waitSession(t, "killed", func(x dbSession) bool { return x.ID == s.ID && x.Status == "killed" })
		// The backend's query was cancelled too.
		var n int
		for range 50 {
			e.pg.QueryRow(ctx, "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'").Scan(&n)
			if n == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if n != 0 {
			t.Error("the killed session's query still runs upstream")
		}
	})

	t.Run("forced check-in", func(t *testing.T) {
		b := background(t, alice, "db", "connect", "pg", "--as", app, "--", "-X", "-c", "select pg_sleep(60)")
		s := e.waitSession(t, "active", func(s dbSession) bool { return s.Principal == "user:alice" && s.Status == "active" && s.LeaseID != "" })
		mustOK(t, run(t, e.admin, "", "checkout", "force-checkin", s.LeaseID), "force-checkin")
		if err := b.wait(t, "psql after its lease was force-checked-in", 15*time.Second); err == nil {
			t.Error("psql succeeded after its check-out ended")
		}
		if !strings.Contains(b.stderr.String(), "ended (forced)") {
			t.Errorf("psql stderr lacks why:\n%s", b.stderr)
		}
		e.waitSession(t, "killed", func(x dbSession) bool { return x.ID == s.ID && x.Status == "killed" })
	})

	t.Run("policy removed", func(t *testing.T) {
		b := background(t, alice, "db", "connect", "pg", "--as", app, "--", "-X", "-c", "select pg_sleep(60)")
		e.waitSession(t, "active", func(s dbSession) bool { return s.Principal == "user:alice" && s.Status == "active" })
		mustOK(t, run(t, e.admin, "", "policy", "delete", "alice-pg"), "policy delete")
		if err := b.wait(t, "psql after its policy was removed", 15*time.Second); err == nil {
			t.Error("psql succeeded after its access was withdrawn")
		}
		if !strings.Contains(b.stderr.String(), "your access to this target was withdrawn") {
			t.Errorf("psql stderr:\n%s", b.stderr)
		}
	})
}

// TestDBGatewayJIT: a just-in-time grant with an ephemeral database user;
// its expiry, then a revocation, ends the live session.
func TestDBGatewayJIT(t *testing.T) {
	e := newDBEnv(t)
	mgmtPW := "mgmt-" + fmt.Sprint(time.Now().UnixNano())
	mgmt := e.pg.CreateRole(t, mgmtPW, "CREATEROLE")
	readRole := "wt_dbread_" + fmt.Sprint(time.Now().UnixNano()%1e9)
	e.pg.Exec(t, "CREATE ROLE "+readRole+" NOLOGIN")
	e.pg.Exec(t, "GRANT "+readRole+" TO "+mgmt+" WITH ADMIN OPTION")
	t.Cleanup(func() { e.pg.Exec(t, "DROP ROLE IF EXISTS "+readRole) })
	mustOK(t, run(t, e.admin, "", "target", "add", "postgres", "pg", "--host", e.pg.Host, "--port", fmt.Sprint(e.pg.Port),
		"--option", "sslmode=disable", "--management-account", mgmt), "target add")
	mustOK(t, run(t, e.admin, mgmtPW+"\n", "account", "add", "pg/"+mgmt, "--password-stdin", "--no-rotate-on-checkin"), "account add mgmt")
	policy := filepath.Join(t.TempDir(), "jit.cedar")
	os.WriteFile(policy, []byte(`permit(principal == ?principal, action == Action::"connect", resource in Target::"pg");`), 0o600)
	mustOK(t, run(t, e.admin, "", "role", "create", "pg-read", "--policy", policy, "--ephemeral-target", "pg", "--ephemeral-role", readRole), "role create")
	mustOK(t, run(t, e.admin, "", "role", "eligible", "pg-read", "--user", "carol", "--max-ttl", "1h"), "eligible")
	carol, _ := e.user(t, "carol")

	// Without a grant carol may not connect at all.
	if r := run(t, carol, "", "db", "connect", "pg", "--", "-X", "-c", "select 1"); r.code == 0 {
		t.Fatal("carol connected without a grant")
	}
	type request struct {
		GrantID string `json:"grant_id"`
	}
	grant := func(ttl string) string {
		req := decodeJSON[request](t, mustOK(t, run(t, carol, "", "request", "create", "--role", "pg-read", "--ttl", ttl,
			"--reason", "e2e", "--format", "json"), "request").stdout)
		if req.GrantID == "" {
			t.Fatalf("request not granted at once: %+v", req)
		}
		return req.GrantID
	}
	// live starts a session of carol's with her grant's database user,
	// once it exists, and returns it.
	live := func(g string) (*bg, dbSession) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			r := run(t, carol, "", "db", "connect", "pg", "--", "-X", "-Atq", "-c", "select current_user")
			if r.code == 0 && strings.HasPrefix(r.stdout, "wjit_") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("carol cannot connect with grant %s: %s", g, r.stderr)
			}
		}
		b := background(t, carol, "db", "connect", "pg", "--", "-X", "-c", "select pg_sleep(60)")
		s := e.waitSession(t, "of carol's grant, active", func(s dbSession) bool {
			return s.Principal == "user:carol" && s.GrantID == g && s.Status == "active"
		})
		return b, s
	}

	g1 := grant("12s")
	b, s := live(g1)
	if !strings.HasPrefix(s.Account, "pg/wjit_") {
		t.Errorf("session account %q, want the grant's ephemeral user", s.Account)
	}
	if err := b.wait(t, "psql at the grant's expiry", 30*time.Second); err == nil {
		t.Error("psql succeeded past the grant's expiry")
	}
	if !strings.Contains(b.stderr.String(), "your access to this target has expired") {
		t.Errorf("psql stderr at expiry:\n%s", b.stderr)
	}
	e.waitSession(t, "expired", func(x dbSession) bool { return x.ID == s.ID && x.Status == "expired" })

	g2 := grant("1h")
	b, s = live(g2)
	mustOK(t, run(t, e.admin, "", "grant", "revoke", g2, "--reason", "e2e"), "grant revoke")
	if err := b.wait(t, "psql after the revocation", 15*time.Second); err == nil {
		t.Error("psql succeeded after its grant was revoked")
	}
	// Warder's re-check or the ephemeral user's removal ends it first.
	if out := b.stderr.String(); !strings.Contains(out, "your access to this target was withdrawn") && !strings.Contains(out, "terminating connection") {
		t.Errorf("psql stderr after the revocation:\n%s", out)
	}
	e.waitSession(t, "ended", func(x dbSession) bool { return x.ID == s.ID && x.Status != "active" })
}
