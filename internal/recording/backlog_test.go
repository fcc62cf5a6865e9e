package recording

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/store"
)

// gatedCipher is a barrier whose Encrypt waits until gate is closed: a
// store that has fallen behind. Encrypt then fails with err, if set
// before gate was closed, or encrypts.
type gatedCipher struct {
	Cipher
	gate chan struct{}
	err  error
}

func (c *gatedCipher) Encrypt(ctx context.Context, aad barrier.AAD, plaintext []byte) ([]byte, error) {
	select {
	case <-c.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c.err != nil {
		return nil, c.err
	}
	return c.Cipher.Encrypt(ctx, aad, plaintext)
}

// newGatedEnv returns an env whose chunks (of 256 bytes) wait for gc's
// gate.
func newGatedEnv(t *testing.T, db *store.DB, gc *gatedCipher) *env {
	return newEnv(t, db, envOpts{chunk: 256, cipher: func(c Cipher) Cipher { gc.Cipher = c; return gc }})
}

var dbMeta = Meta{Kind: DB, Principal: "user:alice", Target: "db1", Account: "db1/app", Source: "192.0.2.7"}

func statement(i int) []byte { return fmt.Appendf(nil, `{"sql":"select %d"}`, i) }

// fillBacklog records statements from *n on until RecordNoWait reports a
// backlog.
func fillBacklog(t *testing.T, s *Session, n *int) {
	t.Helper()
	for {
		if *n > 1000 {
			t.Fatal("RecordNoWait never reported a backlog with the store blocked")
		}
		backlogged, err := s.RecordNoWait(Statement, statement(*n))
		if err != nil {
			t.Fatalf("RecordNoWait(%d): %v", *n, err)
		}
		*n++
		if backlogged {
			return
		}
	}
}

// waitCalled waits for a NotifyDrained function to send on ch.
func waitCalled(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("NotifyDrained's function was not called %s", what)
	}
}

// TestRecordNoWait: with the store blocked RecordNoWait reports a backlog
// but accepts every event; NotifyDrained's functions run once the store
// catches up, and the recording holds every event, in order.
func TestRecordNoWait(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		gc := &gatedCipher{gate: make(chan struct{})}
		e := newGatedEnv(t, open(t), gc)
		s := e.start(t, dbMeta)

		called := false
		s.NotifyDrained(func() { called = true })
		if !called {
			t.Fatal("NotifyDrained did not call its function at once without a backlog")
		}

		n := 0
		fillBacklog(t, s, &n)
		for range 50 { // accepted, not lost, still backlogged
			backlogged, err := s.RecordNoWait(Statement, statement(n))
			if err != nil || !backlogged {
				t.Fatalf("RecordNoWait(%d) while backlogged = %v, %v; want true, nil", n, backlogged, err)
			}
			n++
		}

		drained := make(chan struct{}, 2)
		s.NotifyDrained(func() { drained <- struct{}{} })
		// The second function records from the writer goroutine: it must
		// not be called with the session's lock held.
		last := n
		n++
		errc := make(chan error, 1)
		s.NotifyDrained(func() {
			_, err := s.RecordNoWait(Statement, statement(last))
			errc <- err
			drained <- struct{}{}
		})
		select {
		case <-drained:
			t.Fatal("NotifyDrained's function was called while the store was blocked")
		default:
		}

		close(gc.gate)
		waitCalled(t, drained, "once the store caught up")
		waitCalled(t, drained, "once the store caught up")
		if err := <-errc; err != nil {
			t.Fatalf("RecordNoWait from a NotifyDrained function: %v", err)
		}
		if err := s.Close(e.ctx, StatusClosed); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordNoWait(Statement, statement(n)); !errors.Is(err, ErrClosed) {
			t.Errorf("RecordNoWait after Close = %v, want ErrClosed", err)
		}
		called = false
		s.NotifyDrained(func() { called = true })
		if !called {
			t.Error("NotifyDrained did not call its function at once after Close")
		}

		var got int
		for _, ev := range e.replay(t, s.ID()) {
			if ev.Type != Statement {
				continue
			}
			if want := string(statement(got)); ev.Data != want {
				t.Fatalf("statement %d is %s, want %s", got, ev.Data, want)
			}
			got++
		}
		if got != n {
			t.Errorf("%d statements recorded, want %d", got, n)
		}
	})
}

// TestRecordNoWaitStoreFails: NotifyDrained's function also runs when the
// recording fails, and RecordNoWait then fails as Record does.
func TestRecordNoWaitStoreFails(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		gc := &gatedCipher{gate: make(chan struct{}), err: errors.New("barrier sealed")}
		e := newGatedEnv(t, open(t), gc)
		s := e.start(t, dbMeta)
		n := 0
		fillBacklog(t, s, &n)
		drained := make(chan struct{}, 1)
		s.NotifyDrained(func() { drained <- struct{}{} })
		close(gc.gate)
		waitCalled(t, drained, "once the recording failed")
		if _, err := s.RecordNoWait(Statement, statement(n)); !errors.Is(err, ErrRecordingFailed) {
			t.Errorf("RecordNoWait after the failure = %v, want ErrRecordingFailed", err)
		}
		waitDone(t, s.Context(), time.Second)
		called := false
		s.NotifyDrained(func() { called = true })
		if !called {
			t.Error("NotifyDrained did not call its function at once after the failure")
		}
		if err := s.Close(e.ctx, StatusClosed); !errors.Is(err, ErrRecordingFailed) {
			t.Errorf("Close = %v, want ErrRecordingFailed", err)
		}
	})
}
