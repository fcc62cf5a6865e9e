package cli

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/warderhq/warder/internal/client"
)

func TestPgpass(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cfg")
	f := dbFiles{dir: dir, pgpass: filepath.Join(dir, dbPgpassFile)}
	soon := time.Now().Add(time.Hour)
	if err := f.savePgpass(pgpassLine("127.0.0.1", "7432", "*", "app@pg", "wt1.a.b"), soon); err != nil {
		t.Fatal(err)
	}
	if err := f.savePgpass(pgpassLine("127.0.0.1", "7432", "*", "pg", "wt1.c.d"), soon); err != nil {
		t.Fatal(err)
	}
	// A new token for the same user replaces the old one.
	if err := f.savePgpass(pgpassLine("127.0.0.1", "7432", "*", "app@pg", "wt1.e.f"), soon); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(f.pgpass)
	if err != nil {
		t.Fatal(err)
	}
	got := string(data)
	if strings.Contains(got, "wt1.a.b") || !strings.Contains(got, "127.0.0.1:7432:*:app@pg:wt1.e.f\n") || !strings.Contains(got, "127.0.0.1:7432:*:pg:wt1.c.d\n") {
		t.Errorf("pgpass:\n%s", got)
	}
	if fi, err := os.Stat(f.pgpass); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("pgpass mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("config dir mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	// An expired entry is dropped at the next write.
	if err := f.savePgpass(pgpassLine("h", "1", "*", "old", "x"), time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := f.savePgpass(pgpassLine("h", "1", "*", "new", "y"), soon); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(f.pgpass)
	if strings.Contains(string(data), ":old:") || !strings.Contains(string(data), ":new:y") || !strings.Contains(string(data), ":pg:wt1.c.d") {
		t.Errorf("after expiry:\n%s", data)
	}
}

func TestPgpassEscaping(t *testing.T) {
	line := pgpassLine("::1", "7432", "*", `a:b\c`, `p:w\d`)
	if line != `\:\:1:7432:*:a\:b\\c:p\:w\\d` {
		t.Errorf("pgpassLine = %q", line)
	}
	if k := pgpassKey(line); k != `\:\:1:7432:*:a\:b\\c` {
		t.Errorf("pgpassKey = %q", k)
	}
	if k := pgpassKey(`h:1:*:u\\:pw`); k != `h:1:*:u\\` {
		t.Errorf("pgpassKey with an escaped backslash before the colon = %q", k)
	}
}

func TestPsqlEnviron(t *testing.T) {
	got := psqlEnviron([]string{"HOME=/root", "PGPASSWORD=secret", "PGHOST=evil", "PGSERVICE=x", "PGSSLMODE=disable",
		"PGDATABASE=app", "PGAPPNAME=me", "PATH=/bin"})
	want := "HOME=/root PGDATABASE=app PGAPPNAME=me PATH=/bin"
	if strings.Join(got, " ") != want {
		t.Errorf("psqlEnviron = %v, want %s", got, want)
	}
}

func TestPrintStatements(t *testing.T) {
	var o strings.Builder
	e := &env{stdout: &o, stderr: &o}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	d := client.SessionDetail{Session: client.Session{ID: "s1", Kind: "db", StartedAt: start}}
	for _, rec := range []string{
		`{"time":1.5,"sql":"select\n  1","params":[],"tag":"SELECT 1","rows":1,"error_code":"","duration_ms":0.25}`,
		`{"time":2,"sql":"select $1::int","params":["42"],"tag":"SELECT 1","rows":1,"error_code":"","duration_ms":1}`,
		`{"time":3,"stmt":"s1","params":["7"],"tag":"SELECT 1","rows":1,"error_code":"","duration_ms":1}`,
		`{"time":4,"sql":"select 1/0","params":[],"tag":"","rows":0,"error_code":"22012","duration_ms":1}`,
		`{"time":5,"sql":"drop table t","params":[],"blocked":"(?i)drop\\s+table","tag":"","rows":0,"error_code":"42501","duration_ms":0}`,
		`{"time":6,"sql":"alter role x","params":[],"alert":"(?i)^alter role","tag":"ALTER ROLE","rows":0,"error_code":"","duration_ms":2}`,
	} {
		d.Statements = append(d.Statements, json.RawMessage(rec))
	}
	e.printStatements(d)
	got := o.String()
	for _, want := range []string{
		"#  TIME", start.Add(1500 * time.Millisecond).Format("15:04:05.000"), "0.250ms", "SELECT 1  ", "select 1\n",
		`select $1::int  -- params: ["42"]`, `(prepared statement s1)  -- params: ["7"]`, "ERROR 22012", `BLOCKED by (?i)drop\s+table`,
		`ALTER ROLE [alert: (?i)^alter role]`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("statements table lacks %q:\n%s", want, got)
		}
	}
}

func TestProxyReadStartup(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	type res struct {
		sm     *pgproto3.StartupMessage
		cancel []byte
		err    error
	}
	done := make(chan res, 1)
	go func() { sm, c, err := readStartup(server); done <- res{sm, c, err} }()
	var ssl [8]byte
	binary.BigEndian.PutUint32(ssl[:4], 8)
	binary.BigEndian.PutUint32(ssl[4:], pgSSLRequest)
	client.Write(ssl[:])
	answer := make([]byte, 1)
	if _, err := client.Read(answer); err != nil || answer[0] != 'N' {
		t.Fatalf("SSLRequest answered %q, %v; want N", answer, err)
	}
	sm := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "me", "database": "app"}}
	b, _ := sm.Encode(nil)
	client.Write(b)
	r := <-done
	if r.err != nil || r.sm == nil || r.sm.Parameters["database"] != "app" || r.cancel != nil {
		t.Fatalf("readStartup = %+v", r)
	}

	// A cancel request comes back raw; nonsense is refused.
	go func() { sm, c, err := readStartup(server); done <- res{sm, c, err} }()
	cr, _ := (&pgproto3.CancelRequest{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}).Encode(nil)
	client.Write(cr)
	if r := <-done; r.err != nil || string(r.cancel) != string(cr) {
		t.Errorf("cancel: %+v", r)
	}
	go func() { sm, c, err := readStartup(server); done <- res{sm, c, err} }()
	client.Write([]byte{0, 0, 0xff, 0xff}) // the length only: it is refused before the rest is read
	if r := <-done; r.err == nil {
		t.Error("an oversized startup packet was accepted")
	}
}

// FuzzProxyStartup: whatever a local client sends first, the proxy's
// startup reader answers, returns or refuses without panicking, and
// never hands on a startup message it could not re-encode.
func FuzzProxyStartup(f *testing.F) {
	sm, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "u", "database": "d", "application_name": "psql"}}).Encode(nil)
	var ssl [8]byte
	binary.BigEndian.PutUint32(ssl[:4], 8)
	binary.BigEndian.PutUint32(ssl[4:], pgSSLRequest)
	cr, _ := (&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}).Encode(nil)
	f.Add(sm)
	f.Add(append(ssl[:], sm...))
	f.Add(cr)
	f.Add([]byte{0, 0, 0, 8, 0, 4, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		go func() {
			// Feed the input, draining the proxy's one-byte answers.
			go io.Copy(io.Discard, c)
			c.Write(data)
			c.Close()
		}()
		got, _, err := readStartup(s)
		if err == nil && got != nil {
			if _, err := got.Encode(nil); err != nil {
				t.Fatalf("accepted a startup message it cannot re-encode: %v", err)
			}
		}
	})
}
