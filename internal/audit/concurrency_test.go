package audit

import (
	"context"
	"sync"
	"testing"

	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// TestTwoProcesses runs two Logs on two store.DBs sharing one PostgreSQL
// database, as two server processes would, appending and checkpointing at
// once.
func TestTwoProcesses(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	signer := newTestSigner(t)
	const perLog, workers = 500, 5
	logs := make([]*Log, 2)
	for i := range logs {
		db, err := store.Open(ctx, store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		logs[i] = newLog(t, db, Config{Signer: signer, MaxBatch: 32})
	}
	var mu sync.Mutex
	seen := make(map[int64]bool)
	var wg sync.WaitGroup
	for _, l := range logs {
		for w := range workers {
			wg.Go(func() {
				for i := range perLog / workers {
					ev, err := l.Append(ctx, sampleEvent(w*1000+i))
					if err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					mu.Lock()
					if seen[ev.Seq] {
						t.Errorf("seq %d returned twice", ev.Seq)
					}
					seen[ev.Seq] = true
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			for range 20 {
				if _, _, err := l.Checkpoint(ctx); err != nil {
					t.Errorf("Checkpoint: %v", err)
				}
			}
		})
	}
	wg.Wait()
	rep, err := logs[0].Verify(ctx, signer.pub())
	if err != nil || !rep.OK || rep.Events != 2*perLog || len(seen) != 2*perLog {
		t.Fatalf("Verify: %+v, %v; %d distinct seqs; want OK with %d events", rep, err, len(seen), 2*perLog)
	}
	t.Logf("%d events, %d checkpoints", rep.Events, rep.Checkpoints)
}

// TestGroupCommit appends from many goroutines through one Log.
func TestGroupCommit(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			ctx := context.Background()
			l := newLog(t, be.Open(t), Config{MaxBatch: 16})
			const workers, each = 16, 25
			got := make(chan Event, workers*each)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						ev := sampleEvent(w*100 + i)
						stored, err := l.Append(ctx, ev)
						if err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						if stored.RequestID != ev.RequestID {
							t.Errorf("caller got another caller's event: %q, want %q", stored.RequestID, ev.RequestID)
						}
						got <- stored
					}
				})
			}
			wg.Wait()
			close(got)
			seen := make(map[int64]bool)
			for ev := range got {
				if seen[ev.Seq] {
					t.Errorf("seq %d returned twice", ev.Seq)
				}
				seen[ev.Seq] = true
			}
			rep, err := l.Verify(ctx, nil)
			if err != nil || !rep.OK || rep.Events != workers*each || len(seen) != workers*each {
				t.Errorf("Verify: %+v, %v; want OK with %d events", rep, err, workers*each)
			}
		})
	}
}

// TestCloseDrains checks Close answers every accepted Append and ends the
// writer goroutine.
func TestCloseDrains(t *testing.T) {
	ctx := context.Background()
	l := newLog(t, testenv.SQLite(t), Config{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 50 {
		wg.Go(func() {
			if _, err := l.Append(ctx, sampleEvent(i)); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	l.Close()
	wg.Wait()
	<-l.done
	evs, err := l.List(ctx, Filter{Limit: 1000})
	if err != nil || len(evs) != ok {
		t.Errorf("%d Appends succeeded but %d events stored (%v)", ok, len(evs), err)
	}
}
