package recording

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// A pruned recording is gone — row, chunks, replay — while its audit
// events stay, with the SHA-256 of what was recorded: the proof outlives
// the data.
func TestPruneKeepsAuditHash(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		clock := newClock()
		e := newEnv(t, open(t), envOpts{now: clock.Now, retention: time.Hour, chunk: 64})
		e.rec.stale = 1000 * 24 * time.Hour
		s := e.start(t, sshMeta)
		for i := range 5 {
			record(t, s, Output, strings.Repeat("ls -la\r\n", 4)+itoa(i))
		}
		if err := s.Close(e.ctx, StatusClosed); err != nil {
			t.Fatal(err)
		}
		var file bytes.Buffer
		if err := e.rec.WriteAsciicast(e.ctx, s.ID(), &file); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(file.Bytes())

		clock.Advance(59 * time.Minute)
		if n, err := e.rec.Prune(e.ctx); err != nil || n != 0 {
			t.Fatalf("Prune within retention = %d, %v; want 0", n, err)
		}
		clock.Advance(2 * time.Minute)
		if n, err := e.rec.Prune(e.ctx); err != nil || n != 1 {
			t.Fatalf("Prune = %d, %v; want 1", n, err)
		}
		if _, err := e.rec.Get(e.ctx, s.ID()); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("Get of a pruned recording: %v, want NotFound", err)
		}
		if err := e.rec.WriteAsciicast(e.ctx, s.ID(), &bytes.Buffer{}); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("WriteAsciicast of a pruned recording: %v, want NotFound", err)
		}
		var chunks int
		e.db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM recording_chunks WHERE session_id = $1`, s.ID()).Scan(&chunks)
		if chunks != 0 {
			t.Errorf("%d chunks left", chunks)
		}
		var end []string
		for _, ev := range e.eventsOf(t, "session.end") {
			if ev.Resource == "session:"+s.ID() {
				end = append(end, ev.Details["sha256"])
			}
		}
		if len(end) != 1 || end[0] != hex.EncodeToString(sum[:]) {
			t.Errorf("session.end hashes after prune %q, want [%x]", end, sum)
		}
		if evs := e.eventsOf(t, "session.start"); len(evs) != 1 {
			t.Errorf("%d session.start events after prune, want 1", len(evs))
		}
	})
}

func TestKeepForever(t *testing.T) {
	clock := newClock()
	e := newEnv(t, openSQLite(t), envOpts{now: clock.Now, retention: KeepForever})
	s := e.start(t, sshMeta)
	s.Close(e.ctx, StatusClosed)
	clock.Advance(100 * 365 * 24 * time.Hour)
	if n, err := e.rec.Prune(e.ctx); err != nil || n != 0 {
		t.Fatalf("Prune with KeepForever = %d, %v; want 0", n, err)
	}
	if _, err := e.rec.Get(e.ctx, s.ID()); err != nil {
		t.Errorf("the recording is gone: %v", err)
	}
	if _, err := New(e.ctx, Config{DB: e.db, Audit: e.audit, Barrier: e.barrier, Retention: -2 * time.Hour}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("New with a negative retention other than KeepForever: %v, want Invalid", err)
	}
}

// RunPrune prunes at once and then every interval, until ctx ends.
func TestRunPrune(t *testing.T) {
	clock := newClock()
	e := newEnv(t, openSQLite(t), envOpts{now: clock.Now, retention: time.Hour})
	var logs syncLog
	e.rec.log = slog.New(slog.NewTextHandler(&logs, nil))
	first := e.start(t, sshMeta)
	first.Close(e.ctx, StatusClosed)
	clock.Advance(2 * time.Hour)

	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.rec.RunPrune(ctx, 20*time.Millisecond) }()
	waitGone := func(id string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := e.rec.Get(e.ctx, id); errkind.Is(err, errkind.NotFound) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("recording %s was not pruned", id)
			}
		}
	}
	waitGone(first.ID())
	second := e.start(t, sshMeta)
	second.Close(e.ctx, StatusClosed)
	clock.Advance(2 * time.Hour)
	waitGone(second.ID())
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunPrune did not return after ctx ended")
	}
	if !strings.Contains(logs.String(), "pruned recordings") {
		t.Errorf("no log of the pruning: %s", logs.String())
	}
}
