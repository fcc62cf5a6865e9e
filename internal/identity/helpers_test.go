package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// testParams make Argon2id cheap in tests; tests of the parameters
// themselves set others.
var testParams = PasswordParams{Time: 1, Memory: 64, Threads: 1}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

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

// env is a Directory on a fresh store, with its audit log and an unsealed
// barrier, recording lifecycle events and logs.
type env struct {
	ctx     context.Context
	db      *store.DB
	dir     *Directory
	audit   *audit.Log
	barrier *barrier.Barrier
	clock   *fakeClock
	logs    *syncBuffer

	mu     sync.Mutex
	events []LifecycleEvent
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

// newEnv opens a Directory on db; tweak may change its config.
func newEnv(t testing.TB, db *store.DB, tweak func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
		t.Fatal(err)
	}
	return newEnvWith(t, db, b, tweak)
}

// newEnvWith opens a Directory on db with an unsealed barrier b.
func newEnvWith(t testing.TB, db *store.DB, b *barrier.Barrier, tweak func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	clock := newClock()
	l, err := audit.New(ctx, audit.Config{DB: db, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	e := &env{ctx: ctx, db: db, audit: l, barrier: b, clock: clock, logs: &syncBuffer{}}
	cfg := Config{DB: db, Audit: l, Barrier: b, Now: clock.Now, Password: testParams,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if tweak != nil {
		tweak(&cfg)
	}
	if e.dir, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e.dir.Subscribe(func(_ context.Context, ev LifecycleEvent) {
		e.mu.Lock()
		e.events = append(e.events, ev)
		e.mu.Unlock()
	})
	return e
}

func (e *env) lifecycle() []LifecycleEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]LifecycleEvent(nil), e.events...)
}

// forBackends runs f on a fresh store of each backend.
func forBackends(t *testing.T, f func(t *testing.T, db *store.DB)) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) { f(t, be.Open(t)) })
	}
}

var admin = audit.Origin{Actor: "user:root", Source: "192.0.2.1", RequestID: "req-1"}

// mustUser creates a user with password pw (nil: none).
func (e *env) mustUser(t testing.TB, name string, pw []byte) User {
	t.Helper()
	u, err := e.dir.CreateUser(e.ctx, admin, UserSpec{Name: name, Password: pw})
	if err != nil {
		t.Fatalf("CreateUser(%s): %v", name, err)
	}
	return u
}

// login logs in with a fixed source.
func (e *env) login(user string, pw []byte, code string) (string, Token, error) {
	return e.dir.Login(e.ctx, audit.Origin{Source: "198.51.100.7"}, LoginRequest{User: user, Password: pw, TOTP: code, Source: netip.MustParseAddr("198.51.100.7")})
}

// events returns every audit event.
func (e *env) auditEvents(t testing.TB) []audit.Event {
	t.Helper()
	var all []audit.Event
	var after int64
	for {
		evs, err := e.audit.List(e.ctx, audit.Filter{AfterSeq: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return all
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].Seq
	}
}

// countEvents counts the audit events with action, outcome and (if not "")
// the detail reason.
func (e *env) countEvents(t testing.TB, action, outcome, reason string) int {
	t.Helper()
	n := 0
	for _, ev := range e.auditEvents(t) {
		if ev.Action == action && ev.Outcome == outcome && (reason == "" || ev.Details["reason"] == reason || ev.Details["scope"] == reason) {
			n++
		}
	}
	return n
}

func wantKind(t testing.TB, what string, err error, k errkind.Kind) {
	t.Helper()
	if !errkind.Is(err, k) {
		t.Errorf("%s: err = %v (kind %v), want kind %v", what, err, errkind.Of(err), k)
	}
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if err != want {
		t.Errorf("%s: err = %v, want %v", what, err, want)
	}
}

func jsonString(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
