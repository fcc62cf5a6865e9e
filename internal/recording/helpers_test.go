package recording

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a Recorder on a store with a real, unsealed barrier and audit log.
type env struct {
	ctx     context.Context
	db      *store.DB
	barrier *barrier.Barrier
	audit   *audit.Log
	rec     *Recorder
	key     []byte // the barrier's unseal key file
}

type envOpts struct {
	now       func() time.Time
	chunk     int
	retention time.Duration
	unsealKey []byte // join an initialised barrier (a second process)
	// cipher, if set, wraps the barrier as the Recorder's Cipher.
	cipher func(Cipher) Cipher
}

var alice = audit.Origin{Actor: "user:alice", Source: "192.0.2.7", RequestID: "test"}

var sshMeta = Meta{Kind: SSH, Principal: "user:alice", Target: "web1", Account: "web1/root", Source: "192.0.2.7",
	GrantID: "g1", PTY: true, Width: 120, Height: 40}

func newEnv(t testing.TB, db *store.DB, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	key := o.unsealKey
	if key == nil {
		res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
		if err != nil {
			t.Fatal(err)
		}
		key = res.UnsealKey
	}
	if err := b.UnsealWithKeyFile(ctx, key); err != nil {
		t.Fatal(err)
	}
	a, err := audit.New(ctx, audit.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	var c Cipher = b
	if o.cipher != nil {
		c = o.cipher(b)
	}
	r, err := New(ctx, Config{DB: db, Audit: a, Barrier: c, Now: o.now, ChunkBytes: o.chunk, Retention: o.retention})
	if err != nil {
		t.Fatal(err)
	}
	return &env{ctx: ctx, db: db, barrier: b, audit: a, rec: r, key: key}
}

// forBackends runs f once per store backend.
func forBackends(t *testing.T, f func(t *testing.T, open func(testing.TB) *store.DB)) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) { f(t, be.Open) })
	}
}

// eventsOf returns the audit events with action.
func (e *env) eventsOf(t testing.TB, action string) []audit.Event {
	t.Helper()
	evs, err := e.audit.List(e.ctx, audit.Filter{Action: action, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// start starts a session, failing t on error.
func (e *env) start(t testing.TB, m Meta) *Session {
	t.Helper()
	s, err := e.rec.Start(e.ctx, alice, m)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

func record(t testing.TB, s *Session, typ EventType, data string) {
	t.Helper()
	if err := s.Record(typ, []byte(data)); err != nil {
		t.Fatalf("Record(%s, %.20q): %v", typ, data, err)
	}
}

// replay returns every event of session id.
func (e *env) replay(t testing.TB, id string) []Event {
	t.Helper()
	var evs []Event
	if err := e.rec.Replay(e.ctx, id, func(ev Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return evs
}

// joined concatenates the data of the events of type typ.
func joined(evs []Event, typ EventType) string {
	var b strings.Builder
	for _, ev := range evs {
		if ev.Type == typ {
			b.WriteString(ev.Data)
		}
	}
	return b.String()
}

// waitDone waits up to d for ctx to end.
func waitDone(t testing.TB, ctx context.Context, d time.Duration) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(d):
		t.Fatalf("the session's context was not cancelled within %v", d)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func openSQLite(t testing.TB) *store.DB { return testenv.SQLite(t) }
