package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// testSigner is an in-memory Signer that can be sealed.
type testSigner struct {
	priv   ed25519.PrivateKey
	sealed atomic.Bool
}

func newTestSigner(t testing.TB) *testSigner {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{priv: priv}
}

func (s *testSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	if s.sealed.Load() {
		return nil, errkind.New(errkind.Sealed, "barrier: sealed")
	}
	return ed25519.Sign(s.priv, msg), nil
}

func (s *testSigner) PublicKey(ctx context.Context) (ed25519.PublicKey, error) {
	if s.sealed.Load() {
		return nil, errkind.New(errkind.Sealed, "barrier: sealed")
	}
	return s.priv.Public().(ed25519.PublicKey), nil
}

func (s *testSigner) pub() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// fakeClock is a clock that advances one second per reading.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// advance moves the clock d forward.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newLog opens a Log on db that is closed when t ends (before db).
func newLog(t testing.TB, db *store.DB, cfg Config) *Log {
	t.Helper()
	cfg.DB = db
	l, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// sampleEvent returns a distinct, valid event for index i.
func sampleEvent(i int) Event {
	outcomes := []string{OutcomeSuccess, OutcomeFailure, OutcomeAllow, OutcomeDeny}
	return Event{
		Actor:     fmt.Sprintf("user:u%d", i%3),
		Action:    []string{"sys.unseal", "auth.token", "secret.write"}[i%3],
		Resource:  fmt.Sprintf("secret/app/%d", i),
		Outcome:   outcomes[i%4],
		Source:    "192.0.2.7:51000",
		RequestID: fmt.Sprintf("req-%d", i),
		Details:   map[string]string{"n": fmt.Sprint(i), "hmac": "5e1f00aa", "note": "quote \" and ünïcode"},
	}
}

// appendN appends n sample events and returns them as stored.
func appendN(t testing.TB, l *Log, n int) []Event {
	t.Helper()
	out := make([]Event, 0, n)
	for i := range n {
		ev, err := l.Append(context.Background(), sampleEvent(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		out = append(out, ev)
	}
	return out
}

// mustExec runs a tampering statement directly on the database.
func mustExec(t testing.TB, db *store.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
