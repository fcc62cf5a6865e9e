package audit

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestRoundTrip(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			l := newLog(t, be.Open(t), Config{Now: clock.Now})
			evs := appendN(t, l, 12)
			explicit := sampleEvent(99)
			explicit.Time = time.Date(2020, 1, 2, 3, 4, 5, 6789, time.FixedZone("x", 3600))
			explicit.Details = map[string]string{}
			got, err := l.Append(ctx, explicit)
			if err != nil {
				t.Fatal(err)
			}
			if want := time.Date(2020, 1, 2, 2, 4, 5, 6000, time.UTC); !got.Time.Equal(want) || got.Time.Location() != time.UTC || got.Details != nil {
				t.Errorf("explicit event stored as time %v details %v; want %v, nil", got.Time, got.Details, want)
			}
			evs = append(evs, got)

			for i, ev := range evs {
				if ev.Seq != int64(i+1) {
					t.Fatalf("event %d has seq %d", i, ev.Seq)
				}
				if ev.Time.Nanosecond()%1000 != 0 {
					t.Errorf("event %d time %v is finer than a microsecond", i, ev.Time)
				}
			}
			if evs[0].PrevHash != GenesisHash || evs[1].PrevHash != evs[0].Hash {
				t.Errorf("chain links wrong: %q %q %q", evs[0].PrevHash, evs[1].PrevHash, evs[0].Hash)
			}

			all, err := l.List(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(all, evs) {
				t.Fatalf("List returned\n%+v\nwant\n%+v", all, evs)
			}

			pick := func(keep func(Event) bool) []Event {
				var out []Event
				for _, ev := range evs {
					if keep(ev) {
						out = append(out, ev)
					}
				}
				return out
			}
			tests := []struct {
				name string
				f    Filter
				want []Event
			}{
				{"actor", Filter{Actor: "user:u1"}, pick(func(e Event) bool { return e.Actor == "user:u1" })},
				{"action", Filter{Action: "auth.token"}, pick(func(e Event) bool { return e.Action == "auth.token" })},
				{"actor and action", Filter{Actor: "user:u0", Action: "sys.unseal"}, pick(func(e Event) bool { return e.Actor == "user:u0" && e.Action == "sys.unseal" })},
				{"since until", Filter{Since: evs[3].Time, Until: evs[6].Time}, evs[3:6]},
				{"after seq", Filter{AfterSeq: 10}, evs[10:]},
				{"limit", Filter{Limit: 4}, evs[:4]},
				{"page", Filter{AfterSeq: 4, Limit: 2}, evs[4:6]},
				{"no match", Filter{Actor: "user:nobody"}, nil},
			}
			for _, tt := range tests {
				got, err := l.List(ctx, tt.f)
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: got %d events %v, want %d", tt.name, len(got), seqs(got), len(tt.want))
				}
			}

			var buf bytes.Buffer
			if err := l.Export(ctx, &buf, Filter{}); err != nil {
				t.Fatal(err)
			}
			var decoded []Event
			sc := bufio.NewScanner(&buf)
			for sc.Scan() {
				ev, err := DecodeEvent(sc.Bytes())
				if err != nil {
					t.Fatalf("DecodeEvent(%s): %v", sc.Text(), err)
				}
				decoded = append(decoded, ev)
			}
			if !reflect.DeepEqual(decoded, evs) {
				t.Errorf("exported events differ from appended ones")
			}
			buf.Reset()
			if err := l.Export(ctx, &buf, Filter{Action: "sys.unseal"}); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(buf.String(), "\n"); n != len(pick(func(e Event) bool { return e.Action == "sys.unseal" })) {
				t.Errorf("filtered export has %d lines", n)
			}
		})
	}
}

func seqs(evs []Event) []int64 {
	var s []int64
	for _, e := range evs {
		s = append(s, e.Seq)
	}
	return s
}

func TestAppendInvalid(t *testing.T) {
	l := newLog(t, testenv.SQLite(t), Config{})
	long := strings.Repeat("x", MaxFieldBytes+1)
	many := map[string]string{}
	for i := range MaxDetails + 1 {
		many[string(rune('a'+i%26))+strings.Repeat("k", i)] = "v"
	}
	ok := sampleEvent(0)
	tests := []struct {
		name string
		mod  func(*Event)
	}{
		{"no action", func(e *Event) { e.Action = "" }},
		{"no outcome", func(e *Event) { e.Outcome = "" }},
		{"unknown outcome", func(e *Event) { e.Outcome = "maybe" }},
		{"long actor", func(e *Event) { e.Actor = long }},
		{"long resource", func(e *Event) { e.Resource = long }},
		{"long detail value", func(e *Event) { e.Details = map[string]string{"k": long} }},
		{"long detail key", func(e *Event) { e.Details = map[string]string{strings.Repeat("k", MaxDetailKey+1): "v"} }},
		{"empty detail key", func(e *Event) { e.Details = map[string]string{"": "v"} }},
		{"too many details", func(e *Event) { e.Details = many }},
		{"NUL", func(e *Event) { e.Source = "a\x00b" }},
		{"invalid UTF-8", func(e *Event) { e.RequestID = "\xff" }},
		{"year 10000", func(e *Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := ok
			tt.mod(&ev)
			if _, err := l.Append(context.Background(), ev); !errkind.Is(err, errkind.Invalid) {
				t.Errorf("Append: got %v, want an Invalid error", err)
			}
		})
	}
	if evs, _ := l.List(context.Background(), Filter{}); len(evs) != 0 {
		t.Errorf("invalid events were stored: %v", seqs(evs))
	}
	if _, err := l.Append(context.Background(), ok); err != nil {
		t.Errorf("valid event refused: %v", err)
	}
}

func TestAppendTx(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			ctx := context.Background()
			db := be.Open(t)
			l := newLog(t, db, Config{})
			appendN(t, l, 3)
			mustExec(t, db, `CREATE TABLE widgets (name TEXT PRIMARY KEY)`)

			errRollback := errors.New("rollback")
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO widgets VALUES ('lost')`); err != nil {
					return err
				}
				ev, err := l.AppendTx(ctx, tx, sampleEvent(3))
				if err != nil {
					return err
				}
				if ev.Seq != 4 {
					t.Errorf("AppendTx seq %d, want 4", ev.Seq)
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatalf("InTx: %v", err)
			}
			if evs, _ := l.List(ctx, Filter{}); len(evs) != 3 {
				t.Fatalf("after rollback: %d events, want 3", len(evs))
			}

			var kept Event
			err = db.InTx(ctx, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO widgets VALUES ('kept')`); err != nil {
					return err
				}
				var err error
				kept, err = l.AppendTx(ctx, tx, sampleEvent(4))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			next, err := l.Append(ctx, sampleEvent(5))
			if err != nil {
				t.Fatal(err)
			}
			if kept.Seq != 4 || next.Seq != 5 || next.PrevHash != kept.Hash {
				t.Errorf("committed AppendTx seq %d, next seq %d linked %v; want 4, 5, true", kept.Seq, next.Seq, next.PrevHash == kept.Hash)
			}
			rep, err := l.Verify(ctx, nil)
			if err != nil || !rep.OK || rep.Events != 5 {
				t.Errorf("Verify: %+v, %v; want OK with 5 events", rep, err)
			}
			if _, err := l.AppendTx(ctx, nil, Event{Action: "x"}); !errkind.Is(err, errkind.Invalid) {
				t.Errorf("AppendTx of an invalid event: %v, want Invalid", err)
			}
		})
	}
}

func TestFailClosed(t *testing.T) {
	configs := []struct {
		name string
		cfg  func(t *testing.T) store.Config
	}{
		{"sqlite", func(t *testing.T) store.Config {
			return store.Config{SQLitePath: filepath.Join(t.TempDir(), "warder.db")}
		}},
		{"postgres", func(t *testing.T) store.Config { return store.Config{PostgresURL: testenv.PostgresURL(t)} }},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := c.cfg(t)
			db, err := store.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			l, err := New(ctx, Config{DB: db})
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, l, 2)

			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := l.Append(cancelled, sampleEvent(7)); err == nil {
				t.Error("Append with a cancelled context succeeded")
			}

			db.Close()
			if ev, err := l.Append(ctx, sampleEvent(8)); err == nil {
				t.Errorf("Append on a closed database succeeded: %+v", ev)
			}
			l.Close()
			if _, err := l.Append(ctx, sampleEvent(9)); !errors.Is(err, ErrClosed) {
				t.Errorf("Append after Close: %v, want ErrClosed", err)
			}

			db, err = store.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			l = newLog(t, db, Config{})
			rep, err := l.Verify(ctx, nil)
			if err != nil || !rep.OK || rep.Events != 2 {
				t.Errorf("after failed appends: %+v, %v; want OK with 2 events", rep, err)
			}
		})
	}
}

func TestCheckpointSealed(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			ctx := context.Background()
			db := be.Open(t)
			if _, ok, err := newLog(t, db, Config{}).Checkpoint(ctx); ok || err != nil {
				t.Errorf("Checkpoint without signer: %v, %v; want false, nil", ok, err)
			}
			signer := newTestSigner(t)
			signer.sealed.Store(true)
			l := newLog(t, db, Config{Signer: signer})
			appendN(t, l, 5)
			if _, ok, err := l.Checkpoint(ctx); ok || err != nil {
				t.Fatalf("Checkpoint while sealed: %v, %v; want false, nil", ok, err)
			}
			if _, err := l.Append(ctx, sampleEvent(5)); err != nil {
				t.Fatalf("Append while sealed: %v", err)
			}
			signer.sealed.Store(false)
			cp, ok, err := l.Checkpoint(ctx)
			if !ok || err != nil || cp.Seq != 6 {
				t.Fatalf("Checkpoint after unseal: %+v, %v, %v; want seq 6", cp, ok, err)
			}
			if _, ok, err := l.Checkpoint(ctx); ok || err != nil {
				t.Errorf("Checkpoint with nothing new: %v, %v; want false, nil", ok, err)
			}
			appendN(t, l, 1)
			if cp, ok, err := l.Checkpoint(ctx); !ok || err != nil || cp.Seq != 7 {
				t.Errorf("second Checkpoint: %+v, %v, %v; want seq 7", cp, ok, err)
			}
			rep, err := l.Verify(ctx, signer.pub())
			if err != nil || !rep.OK || rep.Checkpoints != 2 || rep.Checkpointed != 7 {
				t.Errorf("Verify: %+v, %v; want OK with 2 checkpoints", rep, err)
			}
		})
	}
}

func TestRunCheckpoints(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := newLog(t, testenv.SQLite(t), Config{Signer: newTestSigner(t), CheckpointInterval: time.Hour, CheckpointEvery: 5})
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	appendN(t, l, 5)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cps, err := l.Checkpoints(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(cps) == 1 && cps[0].Seq == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint after 5 events: %+v", cps)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestCheckpointRefusesBrokenChain(t *testing.T) {
	ctx := context.Background()
	db := testenv.SQLite(t)
	l := newLog(t, db, Config{Signer: newTestSigner(t)})
	appendN(t, l, 3)
	if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
		t.Fatalf("Checkpoint: %v, %v", ok, err)
	}
	appendN(t, l, 3)
	mustExec(t, db, `UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 5`)
	if _, ok, err := l.Checkpoint(ctx); ok || !errkind.Is(err, errkind.Conflict) {
		t.Errorf("Checkpoint over a broken chain: %v, %v; want a Conflict error", ok, err)
	}
}
