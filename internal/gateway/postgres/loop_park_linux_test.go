//go:build linux

package postgres

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/audit"
)

// gatedSession is a memSession that is also a NoWaitSession: while
// blocked it reports a backlog, as a recording whose store has fallen
// behind, and keeps NotifyDrained's functions until release. It records
// every statement all the same.
type gatedSession struct {
	*memSession

	// gmu protects the following.
	gmu     sync.Mutex
	blocked bool
	waiting []func()
}

func (s *gatedSession) RecordNoWait(data []byte) (bool, error) {
	if err := s.memSession.Record(data); err != nil {
		return false, err
	}
	s.gmu.Lock()
	defer s.gmu.Unlock()
	return s.blocked, nil
}

func (s *gatedSession) NotifyDrained(fn func()) {
	s.gmu.Lock()
	if s.blocked {
		s.waiting = append(s.waiting, fn)
		s.gmu.Unlock()
		return
	}
	s.gmu.Unlock()
	fn()
}

func (s *gatedSession) block() {
	s.gmu.Lock()
	s.blocked = true
	s.gmu.Unlock()
}

// release ends the backlog and calls the waiting functions, as the
// recording's writer does.
func (s *gatedSession) release() {
	s.gmu.Lock()
	fns := s.waiting
	s.blocked, s.waiting = false, nil
	s.gmu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// waiters returns how many NotifyDrained functions wait for release.
func (s *gatedSession) waiters() int {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	return len(s.waiting)
}

// statements returns the "sql" of the session's records, in order.
func (s *gatedSession) statements() []string {
	var sqls []string
	for _, r := range s.Records() {
		sql, _ := r["sql"].(string)
		sqls = append(sqls, sql)
	}
	return sqls
}

// gatedRecorder is a memRecorder whose sessions are gatedSessions.
type gatedRecorder struct {
	*memRecorder

	mu       sync.Mutex
	sessions []*gatedSession
}

// install is a fixture option that records with g.
func (g *gatedRecorder) install(c *Config, _ *static) {
	g.memRecorder = c.Recorder.(*memRecorder)
	c.Recorder = g
}

func (g *gatedRecorder) Start(ctx context.Context, o audit.Origin, m Meta) (Session, error) {
	s, err := g.memRecorder.Start(ctx, o, m)
	if err != nil {
		return nil, err
	}
	gs := &gatedSession{memSession: s.(*memSession)}
	g.mu.Lock()
	g.sessions = append(g.sessions, gs)
	g.mu.Unlock()
	return gs, nil
}

func (g *gatedRecorder) last(t *testing.T) *gatedSession {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.sessions) == 0 {
		t.Fatal("no session recorded")
	}
	return g.sessions[len(g.sessions)-1]
}

// oneLoop makes f's server relay every session in one event loop; call it
// before the first session logs in.
func (f *fixture) oneLoop(t *testing.T) {
	f.srv.loops.once.Do(func() { f.srv.loops.loops = []*evLoop{{epfd: -1}} })
	if len(f.srv.loops.loops) != 1 {
		t.Fatal("the server's event loops were started before oneLoop")
	}
}

// newParkFixture returns a fixture with one event loop and gated
// recordings, and two sessions in the loop: a, whose recording the test
// blocks, and b.
func newParkFixture(t *testing.T) (f *fixture, a, b *pgx.Conn, ga *gatedSession) {
	checkLoopsEnd(t)
	gr := &gatedRecorder{}
	// Watched, as the server's sessions are (Checker set): the loop must
	// find the recording's NoWaitSession through the watch.
	f = newFixture(t, func(c *Config, st *static) {
		gr.install(c, st)
		c.Checker, c.Recheck = &checker{}, time.Hour
	})
	f.oneLoop(t)
	a = f.connect(t)
	ga = gr.last(t)
	b = f.connect(t)
	waitFor(t, "both sessions to enter the loop", func() bool { return f.loopSessions() == 2 })
	return f, a, b, ga
}

// parkA makes a's recording backlogged and runs sql on a: it completes,
// and its record parks a. The test then sends next on a, which must not
// be read while a is parked; its result arrives on the channel returned.
func parkA(t *testing.T, a *pgx.Conn, ga *gatedSession, sql, next string) <-chan error {
	t.Helper()
	ctx := context.Background()
	ga.block()
	if _, err := a.Exec(ctx, sql); err != nil {
		t.Fatalf("the statement that parks A: %v", err)
	}
	waitFor(t, "A to be parked", func() bool { return ga.waiters() == 1 })
	done := make(chan error, 1)
	go func() {
		_, err := a.Exec(ctx, next)
		done <- err
	}()
	return done
}

// roundTrips runs n queries on b.
func roundTrips(t *testing.T, b *pgx.Conn, n int) {
	t.Helper()
	for i := range n {
		var got int
		if err := b.QueryRow(context.Background(), "select $1::int", i).Scan(&got); err != nil || got != i {
			t.Fatalf("B's round trip %d while A is parked: %d, %v", i, got, err)
		}
	}
}

// TestLoopParkedRecording: a session whose recording falls behind stops
// being read from its client, without holding up the other session of its
// loop, and goes on once the recording drains, every statement recorded
// in order.
func TestLoopParkedRecording(t *testing.T) {
	f, a, b, ga := newParkFixture(t)
	ctx := context.Background()
	if _, err := a.Exec(ctx, "select 'a1'"); err != nil {
		t.Fatal(err)
	}
	done := parkA(t, a, ga, "select 'a2'", "select 'parked a3'")

	const trips = 200
	roundTrips(t, b, trips)
	select {
	case err := <-done:
		t.Fatalf("A's statement completed while A was parked (err %v)", err)
	default:
	}
	var seen int
	if err := b.QueryRow(ctx, `select count(*) from pg_stat_activity
		where usename = current_user and pid <> pg_backend_pid() and query like '%parked' || ' a3%'`).Scan(&seen); err != nil {
		t.Fatal(err)
	}
	if seen != 0 {
		t.Fatal("A's statement reached the server while A was parked")
	}

	ga.release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("A's statement after the recording drained: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's statement did not complete after the recording drained")
	}
	if _, err := a.Exec(ctx, "select 'a4'"); err != nil {
		t.Fatal(err)
	}
	if got, want := ga.statements(), []string{"select 'a1'", "select 'a2'", "select 'parked a3'", "select 'a4'"}; !slices.Equal(got, want) {
		t.Errorf("A's records %q, want %q", got, want)
	}
	f.rec.mu.Lock()
	gb := f.rec.sessions[1]
	f.rec.mu.Unlock()
	if n := len(gb.Records()); n < trips {
		t.Errorf("B has %d records, want at least %d", n, trips)
	}
	if ga.waiters() != 0 {
		t.Error("a NotifyDrained function is left waiting")
	}
}

// TestLoopKillParked: a parked session ends when killed, and the
// recording's drained callback afterwards does no harm.
func TestLoopKillParked(t *testing.T) {
	_, a, b, ga := newParkFixture(t)
	done := parkA(t, a, ga, "select 'k1'", "select 'k2'")
	roundTrips(t, b, 20)
	ga.kill("maintenance window")
	waitFor(t, "the parked session to end", func() bool { return ga.Status() == StatusKilled })
	select {
	case err := <-done:
		var pe *pgconn.PgError
		if err == nil || (errors.As(err, &pe) && pe.Code != codeAdminShutdown) {
			t.Errorf("A's statement pending at the kill: %v, want the session ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's pending statement did not end with the session")
	}
	ga.release() // posts for an ended session
	roundTrips(t, b, 20)
	if got, want := ga.statements(), []string{"select 'k1'"}; !slices.Equal(got, want) {
		t.Errorf("A's records %q, want %q", got, want)
	}
}
