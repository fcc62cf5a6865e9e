//go:build linux

package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/warderhq/warder/internal/audit"
)

// loopSessions returns the sessions in f's event loops.
func (f *fixture) loopSessions() int { return f.srv.loops.sessions() }

// checkLoopsEnd fails t if an event loop goroutine outlives it (checked
// after the later-registered cleanups, which close the server).
func checkLoopsEnd(t *testing.T) {
	t.Cleanup(func() {
		var stacks string
		for range 100 {
			buf := make([]byte, 1<<20)
			stacks = string(buf[:runtime.Stack(buf, true)])
			if !strings.Contains(stacks, "gateway/postgres.(*evLoop)") {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("event loop goroutine leaked:\n%s", stacks)
	})
}

func TestLoopConcurrentSessions(t *testing.T) {
	checkLoopsEnd(t)
	f := newFixture(t)
	ctx := context.Background()
	const clients, queries = 12, 150
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i] = f.connect(t)
	}
	waitFor(t, "sessions to enter the loops", func() bool { return f.loopSessions() == clients })
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queries {
				var got int
				mode := pgx.QueryExecModeCacheStatement
				if j%2 == 1 {
					mode = pgx.QueryExecModeSimpleProtocol
				}
				if err := conn.QueryRow(ctx, "select $1::int * 2", mode, i*1000+j).Scan(&got); err != nil {
					errc <- err
					return
				}
				if got != 2*(i*1000+j) {
					errc <- fmt.Errorf("client %d query %d: got %d", i, j, got)
					return
				}
			}
			// A batch larger than one read batch (flushOut).
			b := &pgx.Batch{}
			for j := range 2000 {
				b.Queue("select $1::text", strings.Repeat("y", 40)+fmt.Sprint(j))
			}
			br := conn.SendBatch(ctx, b)
			for j := range 2000 {
				var s string
				if err := br.QueryRow().Scan(&s); err != nil || !strings.HasSuffix(s, "y"+fmt.Sprint(j)) {
					errc <- fmt.Errorf("client %d batch %d: %q, %v", i, j, s, err)
					br.Close()
					return
				}
			}
			if err := br.Close(); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for _, conn := range conns {
		conn.Close(ctx)
	}
	waitFor(t, "sessions to leave the loops", func() bool { return f.loopSessions() == 0 })
	f.rec.mu.Lock()
	sessions := append([]*memSession(nil), f.rec.sessions...)
	f.rec.mu.Unlock()
	for _, s := range sessions {
		waitFor(t, "session close", func() bool { return s.Status() == StatusClosed })
		if n := len(s.Records()); n != queries+2000 {
			t.Errorf("session %s: %d records, want %d", s.ID(), n, queries+2000)
		}
	}
}

// slowWriter takes p after a pause every 64 KiB.
type slowWriter struct {
	w io.Writer
	n int
}

func (s *slowWriter) Write(p []byte) (int, error) {
	s.n += len(p)
	if s.n >= 64<<10 {
		s.n = 0
		time.Sleep(2 * time.Millisecond)
	}
	return s.w.Write(p)
}

// TestLoopBackPressure copies more than the sockets hold each way, to a
// client that reads slowly, while another session goes on.
func TestLoopBackPressure(t *testing.T) {
	checkLoopsEnd(t)
	f := newFixture(t)
	ctx := context.Background()
	conn := f.connect(t)
	other := f.connect(t)
	if _, err := conn.Exec(ctx, "create temp table big(id int, v text)"); err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	for i := range 40000 {
		fmt.Fprintf(&in, "%d\t%s\n", i, strings.Repeat(string(rune('a'+i%26)), 100+i%300))
	}
	want := sha256.Sum256(in.Bytes())
	stop := make(chan struct{})
	otherDone := make(chan error, 1)
	go func() { // the other session is not held up
		for {
			select {
			case <-stop:
				otherDone <- nil
				return
			default:
			}
			var one int
			if err := other.QueryRow(ctx, "select 1").Scan(&one); err != nil {
				otherDone <- err
				return
			}
		}
	}()
	if tag, err := conn.PgConn().CopyFrom(ctx, bytes.NewReader(in.Bytes()), "COPY big FROM STDIN"); err != nil || tag.RowsAffected() != 40000 {
		t.Fatalf("COPY FROM: %v, %v", tag, err)
	}
	var out bytes.Buffer
	tag, err := conn.PgConn().CopyTo(ctx, &slowWriter{w: &out}, "COPY (select * from big order by id) TO STDOUT")
	if err != nil || tag.RowsAffected() != 40000 {
		t.Fatalf("COPY TO: %v, %v", tag, err)
	}
	if sha256.Sum256(out.Bytes()) != want {
		t.Fatalf("COPY TO returned %d bytes that differ from the %d copied in", out.Len(), in.Len())
	}
	close(stop)
	if err := <-otherDone; err != nil {
		t.Fatalf("other session: %v", err)
	}
}

// gatedAudit is an AuditLog whose appends wait for open.
type gatedAudit struct {
	memAudit
	open chan struct{}
}

func (a *gatedAudit) Append(ctx context.Context, ev audit.Event) (audit.Event, error) {
	<-a.open
	return a.memAudit.Append(ctx, ev)
}

// TestLoopAuditBeforeForward: an alerted statement reaches the server
// only once its audit event is appended, and waiting for the audit log
// holds up no other session.
func TestLoopAuditBeforeForward(t *testing.T) {
	checkLoopsEnd(t)
	aud := &gatedAudit{open: make(chan struct{})}
	f := newFixture(t, func(c *Config, s *static) {
		c.Audit = aud
		withUpstream(func(up *Upstream) {
			up.Rules = []Rule{{Pattern: regexp.MustCompile(`(?i)^insert into audited`), Action: ActionAlert}}
		})(c, s)
	})
	ctx := context.Background()
	conn := f.connect(t)
	other := f.connect(t)
	if _, err := conn.Exec(ctx, "create temp table audited(a int)"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		b := &pgx.Batch{}
		for i := range 3 {
			b.Queue(fmt.Sprintf("insert into audited values (%d)", i))
		}
		b.Queue("select 1")
		done <- conn.SendBatch(ctx, b).Close()
	}()
	time.Sleep(200 * time.Millisecond)
	var one int
	if err := other.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatalf("other session while the audit log waits: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("alerted statements ran before their audit events were appended: %v", err)
	default:
	}
	close(aud.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from audited").Scan(&n); err != nil || n != 3 {
		t.Fatalf("count = %d, %v", n, err)
	}
	if got := len(aud.Events()); got != 3 {
		t.Errorf("%d audit events, want 3", got)
	}
}

// TestLoopProtocolError: garbage from a logged-in client ends its
// session with a FATAL error, not the others.
func TestLoopProtocolError(t *testing.T) {
	checkLoopsEnd(t)
	f := newFixture(t)
	ctx := context.Background()
	conn := f.connect(t)
	sess := f.rec.last(t)
	other := f.connect(t)
	if _, err := conn.PgConn().Conn().Write([]byte{'Q', 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "select 1")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != codeProtocolViolation || pe.Severity != "FATAL" {
		t.Fatalf("after garbage: %v", err)
	}
	var one int
	if err := other.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatalf("other session: %v", err)
	}
	waitFor(t, "session end", func() bool { return sess.Status() == StatusError })
}

// TestLoopKillUnreadClient kills a session whose client stopped reading a
// large result: the session ends, the others go on.
func TestLoopKillUnreadClient(t *testing.T) {
	checkLoopsEnd(t)
	f := newFixture(t)
	ctx := context.Background()
	conn := f.connect(t)
	sess := f.rec.last(t)
	other := f.connect(t)
	q, _ := (&pgproto3.Query{String: "select repeat('x', 1000) from generate_series(1, 200000)"}).Encode(nil)
	if _, err := conn.PgConn().Conn().Write(q); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the sockets fill up
	start := time.Now()
	sess.kill("maintenance window")
	waitFor(t, "killed session to end", func() bool { return sess.Status() == StatusKilled })
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("kill took %v", d)
	}
	var one int
	if err := other.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatalf("other session: %v", err)
	}
}

// TestLoopPlaintextAndDirectTLS relays clients without TLS (AllowPlaintext)
// and with direct TLS negotiation in the event loop.
func TestLoopPlaintextAndDirectTLS(t *testing.T) {
	checkLoopsEnd(t)
	f := newFixture(t, func(c *Config, _ *static) { c.AllowPlaintext = true })
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		set  func(*pgx.ConnConfig)
	}{
		{"plaintext", func(c *pgx.ConnConfig) { c.TLSConfig = nil }},
		{"direct TLS", func(c *pgx.ConnConfig) { c.SSLNegotiation = "direct" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config(t, f.role+"@pg", aliceToken)
			tc.set(cfg)
			if cfg.TLSConfig != nil {
				cfg.TLSConfig.NextProtos = []string{"postgresql"}
			}
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			waitFor(t, "the session to enter a loop", func() bool { return f.loopSessions() == 1 })
			var s string
			if err := conn.QueryRow(ctx, "select repeat('z', 100000)").Scan(&s); err != nil || len(s) != 100000 {
				t.Fatalf("query: %d bytes, %v", len(s), err)
			}
		})
	}
}

// TestLoopConnIsTemporary: crypto/tls keeps a partly read record when the
// loop's connection has no more bytes yet.
func TestLoopConnIsTemporary(t *testing.T) {
	var ne net.Error
	//lint:ignore SA1019 crypto/tls decides by Temporary whether to keep a partial record
	if !errors.As(errWouldBlock, &ne) || !ne.Temporary() {
		t.Fatal("errWouldBlock is not a temporary net.Error")
	}
}

// socketPair returns the two ends of a Unix stream socket pair.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	return cs[0], cs[1]
}

// FuzzLoopRelay feeds arbitrary bytes to both sides of a relay in an
// event loop (a plaintext client), as FuzzClientMessages does to the
// goroutines: nothing may panic, and the session ends once its peers have
// sent everything and closed.
func FuzzLoopRelay(f *testing.F) {
	for _, s := range clientSeeds() {
		f.Add(s)
	}
	srv, err := New(Config{AllowPlaintext: true, Auth: tokens{}, Authz: &policy{}, Upstream: &static{}, Recorder: &memRecorder{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cl, clPeer := socketPair(t)
		up, upPeer := socketPair(t)
		sess, _ := (&memRecorder{}).Start(context.Background(), audit.Origin{}, Meta{})
		r := &relay{s: srv, client: newLoopConn(cl), up: up, l: &login{target: "t", sess: sess},
			log: slog.New(slog.DiscardHandler), rules: fuzzRules, now: time.Now,
			stmts: map[string]string{}, recorded: map[string]bool{}, portals: map[string]*portal{}}
		var wg sync.WaitGroup
		for _, peer := range []net.Conn{clPeer, upPeer} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer peer.Close()
				peer.Write(data)
				peer.(*net.UnixConn).CloseWrite()
				io.Copy(io.Discard, peer)
			}()
		}
		done := make(chan bool, 1)
		go func() {
			_, ok := r.runLoop()
			r.client.Close()
			done <- ok
		}()
		select {
		case ok := <-done:
			if !ok {
				t.Fatal("the relay did not use an event loop")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the relay did not end")
		}
		wg.Wait()
	})
}
