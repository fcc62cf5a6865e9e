package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/warderhq/warder/internal/authz"
)

func TestQueries(t *testing.T) {
	f := newFixture(t)
	conn := f.connect(t)
	ctx := context.Background()

	// Simple protocol.
	var app, user string
	err := conn.QueryRow(ctx, "select application_name, current_user from pg_stat_activity where pid = pg_backend_pid()",
		pgx.QueryExecModeSimpleProtocol).Scan(&app, &user)
	if err != nil {
		t.Fatal(err)
	}
	sess := f.rec.last(t)
	if app != "warder:"+sess.ID() || user != f.role {
		t.Errorf("application_name, current_user = %q, %q; want warder:%s, %s", app, user, sess.ID(), f.role)
	}
	// Extended protocol with parameters, twice (a cached named statement).
	for i := range 2 {
		var n int
		var s string
		if err := conn.QueryRow(ctx, "select $1::int + 1, $2::text", 41+i, "x'y").Scan(&n, &s); err != nil {
			t.Fatal(err)
		}
		if n != 42+i || s != "x'y" {
			t.Errorf("got %d, %q", n, s)
		}
	}
	// Multi-statement simple query.
	mrr := conn.PgConn().Exec(ctx, "create temp table t(a int); insert into t select generate_series(1,5); select count(*) from t")
	res, err := mrr.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || string(res[2].Rows[0][0]) != "5" {
		t.Fatalf("multi-statement results: %+v", res)
	}
	// A server error, then the session goes on.
	if _, err := conn.Exec(ctx, "select 1/0"); !isCode(err, "22012") {
		t.Fatalf("division by zero: %v", err)
	}
	if _, err := conn.Exec(ctx, "update t set a = a + 1 where a > 2"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "session close", func() bool { return sess.Status() == StatusClosed })
	if f.up.released.Load() != 1 {
		t.Errorf("credential released %d times, want 1", f.up.released.Load())
	}

	recs := sess.Records()
	find := func(sqlPart string) []map[string]any {
		var out []map[string]any
		for _, r := range recs {
			if s, _ := r["sql"].(string); strings.Contains(s, sqlPart) {
				out = append(out, r)
			}
		}
		return out
	}
	for _, tc := range []struct {
		sql, tag string
		rows     float64
		code     string
	}{
		{"from pg_stat_activity", "SELECT 1", 1, ""},
		{"select $1::int + 1", "SELECT 1", 1, ""},
		{"create temp table t", "CREATE TABLE; INSERT 0 5; SELECT 1", 6, ""},
		{"select 1/0", "", 0, "22012"},
		{"update t set", "UPDATE 3", 3, ""},
	} {
		got := find(tc.sql)
		if len(got) == 0 {
			t.Errorf("no record of %q in %v", tc.sql, sess.raw)
			continue
		}
		r := got[0]
		if r["tag"] != tc.tag || r["rows"] != tc.rows || r["error_code"] != tc.code {
			t.Errorf("record of %q = %v; want tag %q rows %v code %q", tc.sql, r, tc.tag, tc.rows, tc.code)
		}
		if _, ok := r["duration_ms"].(float64); !ok {
			t.Errorf("record of %q has no duration: %v", tc.sql, r)
		}
	}
	// The prepared statement's text is recorded once; both executions
	// carry their parameters.
	var execs []map[string]any
	for _, r := range recs {
		if st, _ := r["stmt"].(string); st != "" {
			execs = append(execs, r)
		}
	}
	if len(execs) < 2 {
		t.Fatalf("named executions: %v", sess.raw)
	}
	if _, again := execs[1]["sql"]; again {
		t.Errorf("statement text recorded twice: %v", execs[1])
	}
	for i, want := range [][]any{{`\x00000029`, "x'y"}, {`\x0000002a`, "x'y"}} {
		if got := fmt.Sprint(execs[i]["params"]); got != fmt.Sprint(want) {
			t.Errorf("execution %d params = %s, want %v", i, got, want)
		}
	}
	if sess.in.Load() == 0 || sess.out.Load() == 0 {
		t.Errorf("bytes in/out = %d/%d", sess.in.Load(), sess.out.Load())
	}
	if sess.meta.Account != f.role || sess.meta.Target != "pg" || sess.meta.LeaseID != "lease-1" || sess.meta.Principal.Name != "alice" {
		t.Errorf("meta = %+v", sess.meta)
	}
	// The authorization request.
	f.pol.mu.Lock()
	req := f.pol.reqs[0]
	f.pol.mu.Unlock()
	want := authz.UID{Type: authz.TypeAccount, ID: "pg/" + f.role}
	if req.Action != authz.ActionConnect || req.Resource != want || req.Context.Via != authz.ViaDB || req.Principal.ID != "alice" {
		t.Errorf("authz request = %+v", req)
	}
}

func TestRedactParams(t *testing.T) {
	f := newFixture(t, func(c *Config, _ *static) { c.RedactParams = true })
	conn := f.connect(t)
	if _, err := conn.Exec(context.Background(), "select $1::text", "hunter2"); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	sess := f.rec.last(t)
	waitFor(t, "session close", func() bool { return sess.Status() != "" })
	for _, raw := range sess.raw {
		if strings.Contains(raw, "hunter2") {
			t.Errorf("parameter recorded despite RedactParams: %s", raw)
		}
	}
	if !strings.Contains(strings.Join(sess.raw, "\n"), `"params":["<redacted>"]`) {
		t.Errorf("no redacted parameter in %v", sess.raw)
	}
}

func TestCopy(t *testing.T) {
	f := newFixture(t)
	conn := f.connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "create temp table c(id int, v text)"); err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&in, "%d\t%s\n", i, strings.Repeat(string(rune('a'+i%26)), i%200))
	}
	wantSum := sha256.Sum256(in.Bytes())
	tag, err := conn.PgConn().CopyFrom(ctx, bytes.NewReader(in.Bytes()), "COPY c FROM STDIN")
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 20000 {
		t.Fatalf("COPY FROM: %s", tag)
	}
	var out bytes.Buffer
	tag, err = conn.PgConn().CopyTo(ctx, &out, "COPY (select * from c order by id) TO STDOUT")
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(out.Bytes()); got != wantSum || tag.RowsAffected() != 20000 {
		t.Fatalf("COPY TO: %s, %d bytes, checksum mismatch %v", tag, out.Len(), got != wantSum)
	}
	// A failed COPY FROM leaves the session usable.
	_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("x\ty\n"), "COPY c FROM STDIN")
	if !isCode(err, "22P02") {
		t.Fatalf("bad COPY: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from c").Scan(&n); err != nil || n != 20000 {
		t.Fatalf("count = %d, %v", n, err)
	}
	conn.Close(ctx)
	sess := f.rec.last(t)
	waitFor(t, "session close", func() bool { return sess.Status() != "" })
	var tags []string
	for _, r := range sess.Records() {
		tags = append(tags, fmt.Sprint(r["tag"], "/", r["error_code"]))
	}
	got := strings.Join(tags, " ")
	if !strings.Contains(got, "COPY 20000/ COPY 20000/") || !strings.Contains(got, "/22P02") {
		t.Errorf("records: %s", got)
	}
}

func TestCancel(t *testing.T) {
	f := newFixture(t)
	conn := f.connect(t)
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "select pg_sleep(30)")
		errc <- err
	}()
	// Wait until the statement runs upstream, then cancel it through the
	// gateway (pgconn sends the gateway's key, over TLS).
	waitFor(t, "pg_sleep upstream", func() bool {
		var n int
		f.cluster.QueryRow(ctx, "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'").Scan(&n)
		return n == 1
	})
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !isCode(err, "57014") {
			t.Fatalf("cancelled query: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel had no effect")
	}
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("after cancel: %v", err)
	}
	// A cancel request with an unknown key does nothing.
	c, err := net.Dial("tcp", f.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := (&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}).Encode(nil)
	c.Write(msg)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("cancel connection: read %d, %v; want EOF", n, err)
	}
	c.Close()
}

func TestRules(t *testing.T) {
	f := newFixture(t, withUpstream(func(up *Upstream) {
		up.Rules = []Rule{
			{Pattern: regexp.MustCompile(`(?i)\bdrop table\b`), Action: ActionBlock},
			{Pattern: regexp.MustCompile(`(?i)^create temp table audited`), Action: ActionAlert},
		}
	}))
	conn := f.connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "create temp table keep(a int)"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mode pgx.QueryExecMode
		sql  string
	}{
		{"simple", pgx.QueryExecModeSimpleProtocol, "DROP  TABLE keep"},
		{"simple comment evasion", pgx.QueryExecModeSimpleProtocol, "drop/* x */table keep"},
		{"extended", pgx.QueryExecModeCacheStatement, "drop table keep"},
		{"extended exec", pgx.QueryExecModeExec, "drop table keep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := conn.Exec(ctx, tc.sql, tc.mode)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42501" || !strings.HasPrefix(pe.Message, "warder: statement blocked by rule") {
				t.Fatalf("blocked statement: %v", err)
			}
			var n int
			if err := conn.QueryRow(ctx, "select count(*) from keep").Scan(&n); err != nil {
				t.Fatalf("next query: %v", err)
			}
		})
	}
	// A block inside a batch of the extended protocol: what came before
	// it runs, the client gets results in order.
	b := &pgx.Batch{}
	b.Queue("insert into keep values (1)")
	b.Queue("drop table keep")
	err := conn.SendBatch(ctx, b).Close()
	if !isCode(err, "42501") {
		t.Fatalf("batch: %v", err)
	}
	if _, err := conn.Exec(ctx, "create temp table audited(a int)"); err != nil {
		t.Fatalf("alerted statement: %v", err)
	}
	conn.Close(ctx)
	sess := f.rec.last(t)
	waitFor(t, "session close", func() bool { return sess.Status() != "" })
	var blocked, alerted int
	for _, r := range sess.Records() {
		if r["blocked"] != nil {
			blocked++
			if r["error_code"] != "42501" {
				t.Errorf("blocked record %v", r)
			}
		}
		if r["alert"] != nil {
			alerted++
		}
	}
	if blocked != 5 || alerted != 1 {
		t.Errorf("blocked %d, alerted %d records; want 5, 1: %v", blocked, alerted, sess.raw)
	}
	var actions []string
	for _, ev := range f.aud.Events() {
		actions = append(actions, ev.Action+"/"+ev.Outcome+"/"+ev.Actor)
		if ev.Details["session"] != sess.ID() {
			t.Errorf("event %+v lacks the session", ev)
		}
	}
	if got := strings.Join(actions, " "); strings.Count(got, "db.block/deny/user:alice") != 5 || strings.Count(got, "db.alert/allow/user:alice") != 1 {
		t.Errorf("audit events: %s", got)
	}
}

func TestRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, user, token string
		plaintext         bool
		code, msg         string
	}{
		{"wrong token", f.role + "@pg", "wt1.nope", false, "28P01", "warder: authentication failed"},
		{"denied", f.role + "@pg", bobToken, false, "28000", "warder: bob may not connect"},
		{"unknown target", "x@nowhere", aliceToken, false, "08006", "warder: cannot reach"},
		{"bad user name", "@pg", aliceToken, false, "28000", "warder: the user name must be"},
		{"plaintext", f.role + "@pg", aliceToken, true, "28000", "warder: TLS is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config(t, tc.user, tc.token)
			if tc.plaintext {
				cfg.TLSConfig = nil
			}
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err == nil {
				conn.Close(ctx)
				t.Fatal("connected")
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != tc.code || !strings.HasPrefix(pe.Message, tc.msg) {
				t.Fatalf("error = %v; want %s %q…", err, tc.code, tc.msg)
			}
			if pe.Detail != "" || strings.Contains(pe.Message, "no target") || strings.Contains(pe.Message, "ErrBadToken") {
				t.Errorf("internal details sent: %+v", pe)
			}
		})
	}
	if n := len(f.rec.sessions); n != 0 {
		t.Errorf("%d sessions recorded for refused connections", n)
	}
}

// TestNoPasswordLeak reads everything a client receives, in plaintext
// (the test-only option), through a successful session and failed
// logins, and looks for the upstream password.
func TestNoPasswordLeak(t *testing.T) {
	wrong := "Wrong-" + strings.Repeat("x", 20)
	f := newFixture(t, func(c *Config, _ *static) { c.AllowPlaintext = true })
	var seen bytes.Buffer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return &tapConn{Conn: c, tap: &seen}, err
	}
	ctx := context.Background()
	cfg := f.config(t, f.role+"@pg", aliceToken)
	cfg.TLSConfig, cfg.DialFunc = nil, dial
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn.Exec(ctx, "select * from pg_stat_activity")
	conn.Exec(ctx, "select current_setting('application_name'), session_user")
	conn.Exec(ctx, "select 1/0")
	conn.Close(ctx)
	// The upstream rejects the credential, or the database does not exist.
	for _, db := range []string{"postgres", "no_such_db"} {
		f.up.password = wrong
		if db == "no_such_db" {
			f.up.password = f.password
		}
		cfg := f.config(t, f.role+"@pg", aliceToken)
		cfg.TLSConfig, cfg.DialFunc, cfg.Database = nil, dial, db
		if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
			c.Close(ctx)
			t.Fatalf("connected with upstream password %q", f.up.password)
		} else if strings.Contains(err.Error(), f.password) || strings.Contains(err.Error(), wrong) {
			t.Errorf("error shows the password: %v", err)
		}
	}
	for _, secret := range []string{f.password, wrong} {
		if bytes.Contains(seen.Bytes(), []byte(secret)) {
			t.Errorf("the client received the upstream password %q", secret)
		}
	}
	if !bytes.Contains(seen.Bytes(), []byte("warder:s1")) {
		t.Error("tap saw nothing: test broken")
	}
}

type tapConn struct {
	net.Conn
	tap *bytes.Buffer
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.tap.Write(p[:n])
	return n, err
}

func TestKill(t *testing.T) {
	f := newFixture(t)
	conn := f.connect(t)
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "select pg_sleep(60)")
		errc <- err
	}()
	running := func() bool {
		var n int
		f.cluster.QueryRow(ctx, "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'").Scan(&n)
		return n == 1
	}
	waitFor(t, "pg_sleep upstream", running)
	sess := f.rec.last(t)
	sess.kill("maintenance window")
	select {
	case err := <-errc:
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57P01" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, "maintenance window") {
			t.Fatalf("killed query: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kill had no effect")
	}
	waitFor(t, "backend query cancelled", func() bool { return !running() })
	waitFor(t, "session closed", func() bool { return sess.Status() == StatusKilled })
	if _, err := conn.Exec(ctx, "select 1"); err == nil {
		t.Error("connection usable after kill")
	}
}

func TestExpiry(t *testing.T) {
	f := newFixture(t, func(_ *Config, s *static) { s.notAfter = time.Now().Add(1500 * time.Millisecond) })
	conn := f.connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "select pg_sleep(10)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" || !strings.Contains(pe.Message, "expired") {
		t.Fatalf("expired session: %v", err)
	}
}

func TestShutdown(t *testing.T) {
	f := newFixture(t)
	conn := f.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(context.Background(), "select 1")
	if err == nil {
		t.Fatal("query after shutdown")
	}
	if _, err := net.DialTimeout("tcp", f.addr.String(), time.Second); err == nil {
		t.Error("listener still open")
	}
}

func TestRecorderDown(t *testing.T) {
	f := newFixture(t)
	f.rec.fail = true
	_, err := pgx.ConnectConfig(context.Background(), f.config(t, f.role+"@pg", aliceToken))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "XX000" || strings.Contains(pe.Message, "store down") {
		t.Fatalf("error = %v", err)
	}
	if f.up.released.Load() != 1 {
		t.Errorf("credential released %d times, want 1", f.up.released.Load())
	}
}

func TestPsql(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	f := newFixture(t, withUpstream(func(up *Upstream) {
		up.Rules = []Rule{{Pattern: regexp.MustCompile(`(?i)drop database`), Action: ActionBlock}}
	}))
	cmd := exec.Command(psql, "-X", "-v", "ON_ERROR_STOP=0", "-At",
		fmt.Sprintf("host=127.0.0.1 port=%d user=%s@pg dbname=postgres sslmode=require", f.addr.Port, f.role))
	cmd.Env = append(cmd.Environ(), "PGPASSWORD="+aliceToken, "PGCONNECT_TIMEOUT=10")
	cmd.Stdin = strings.NewReader("select 40 + 2;\ndrop database postgres;\ncreate temp table p(a int);\n" +
		"\\copy p from stdin\n1\n2\n\\.\nselect sum(a) from p; select current_user;\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	want := "42\nERROR:  warder: statement blocked by rule \"(?i)drop database\"\n3\n" + f.role + "\n"
	if got := strings.ReplaceAll(string(out), "CREATE TABLE\n", ""); !strings.Contains(got, "42\n") || !strings.Contains(got, "blocked by rule") || !strings.HasSuffix(got, "3\n"+f.role+"\n") {
		t.Errorf("psql output:\n%s\nwant like:\n%s", out, want)
	}
}

func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

func TestMessageTooLarge(t *testing.T) {
	f := newFixture(t, func(c *Config, _ *static) { c.MaxMessage = 1024 })
	conn := f.connect(t)
	_, err := conn.Exec(context.Background(), "select '"+strings.Repeat("x", 2000)+"'", pgx.QueryExecModeSimpleProtocol)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "54000" || pe.Severity != "FATAL" {
		t.Fatalf("oversized query: %v", err)
	}
	sess := f.rec.last(t)
	waitFor(t, "session end", func() bool { return sess.Status() == StatusError })
}
