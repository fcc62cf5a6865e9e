package recording

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestRecordReplay(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{chunk: 512})
		s := e.start(t, sshMeta)
		big := strings.Repeat("0123456789abcdef\r\n", 4000) // 72 000 bytes: split into events
		writes := []struct {
			typ  EventType
			data string
		}{
			{Output, "Last login: today\r\n\x1b[1;32malice@web1\x1b[0m:~$ "},
			{Input, "ls -la\r"},
			{Output, "total 0\r\n\"quoted\" and \\backslash\\ and \t tab\r\n"},
			{Resize, "100x30"},
			{Output, "caf\xc3"}, // é split across two Records
			{Output, "\xa9 ✓ \x00 nul\r\n"},
			{Output, big},
			{Input, "exit\r"},
			{Note, `{"exit_status":0}`},
			{Statement, `{"sql":"SELECT 1","tag":"SELECT 1"}`},
			{File, `{"op":"write","path":"/tmp/x","size":3}`},
		}
		for _, w := range writes {
			record(t, s, w.typ, w.data)
		}
		s.AddBytes(10, 20)
		s.AddBytes(1, 2)
		if err := s.Close(e.ctx, StatusClosed); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.Close(e.ctx, StatusError); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := s.Record(Output, []byte("late")); !errors.Is(err, ErrClosed) {
			t.Fatalf("Record after Close: %v, want ErrClosed", err)
		}

		evs := e.replay(t, s.ID())
		var wantOut strings.Builder
		for _, w := range writes {
			if w.typ == Output {
				wantOut.WriteString(w.data)
			}
		}
		if got := joined(evs, Output); got != wantOut.String() {
			t.Errorf("replayed output differs: %d bytes, want %d", len(got), wantOut.Len())
		}
		for _, typ := range []EventType{Input, Resize, Note, Statement, File} {
			var want strings.Builder
			for _, w := range writes {
				if w.typ == typ {
					want.WriteString(w.data)
				}
			}
			if got := joined(evs, typ); got != want.String() {
				t.Errorf("replayed %s = %q, want %q", typ, got, want.String())
			}
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Time < evs[i-1].Time {
				t.Fatalf("event %d goes back in time", i)
			}
		}

		info, err := e.rec.Get(e.ctx, s.ID())
		if err != nil {
			t.Fatal(err)
		}
		if info.Status != StatusClosed || info.BytesIn != 11 || info.BytesOut != 22 || info.Events != int64(len(evs)) ||
			info.EndedAt.IsZero() || info.Principal != "user:alice" || info.Account != "web1/root" || !info.PTY || info.Width != 120 {
			t.Errorf("Info = %+v", info)
		}
		var n int
		if err := e.db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM recording_chunks WHERE session_id = $1`, s.ID()).Scan(&n); err != nil || n < 4 {
			t.Errorf("%d chunks (%v), want several with ChunkBytes 512", n, err)
		}

		// The file WriteAsciicast writes hashes to the audited SHA-256 and
		// decodes to the same events.
		var file bytes.Buffer
		if err := e.rec.WriteAsciicast(e.ctx, s.ID(), &file); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(file.Bytes())
		ends := e.eventsOf(t, "session.end")
		if len(ends) != 1 {
			t.Fatalf("%d session.end events, want 1", len(ends))
		}
		d := ends[0].Details
		if d["sha256"] != hex.EncodeToString(sum[:]) || d["sha256"] != info.SHA256 || d["status"] != "closed" ||
			d["bytes"] != itoa(file.Len()) || d["bytes_in"] != "11" || ends[0].Resource != "session:"+s.ID() {
			t.Errorf("session.end details %v; file sha256 %x (%d bytes), info %s", d, sum, file.Len(), info.SHA256)
		}
		if starts := e.eventsOf(t, "session.start"); len(starts) != 1 || starts[0].Actor != "user:alice" ||
			starts[0].Details["target"] != "web1" || starts[0].Details["grant_id"] != "g1" {
			t.Errorf("session.start events %+v", starts)
		}
		h, decoded, err := DecodeAsciicast(bytes.NewReader(file.Bytes()))
		if err != nil {
			t.Fatalf("DecodeAsciicast: %v", err)
		}
		if h.Version != 2 || h.Width != 120 || h.Height != 40 || h.Timestamp != info.StartedAt.Unix() || !strings.Contains(h.Title, "user:alice") {
			t.Errorf("header %+v", h)
		}
		if len(decoded) != len(evs) {
			t.Fatalf("decoded %d events, replayed %d", len(decoded), len(evs))
		}
		for i := range evs {
			if decoded[i] != evs[i] {
				t.Fatalf("event %d: decoded %+v, replayed %+v", i, decoded[i], evs[i])
			}
		}
		if got := Commands(evs); len(got) != 2 || got[0] != "ls -la" || got[1] != "exit" {
			t.Errorf("Commands = %q", got)
		}
	})
}

func TestRecordInvalid(t *testing.T) {
	e := newEnv(t, openSQLite(t), envOpts{})
	for _, m := range []Meta{
		{Kind: "rdp", Principal: "user:a", Target: "t"},
		{Kind: SSH, Target: "t"},
		{Kind: SSH, Principal: "user:a"},
		{Kind: SSH, Principal: "user:a", Target: "t", Width: -1},
	} {
		if _, err := e.rec.Start(e.ctx, alice, m); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Start(%+v) = %v, want Invalid", m, err)
		}
	}
	s := e.start(t, Meta{Kind: DB, Principal: "user:a", Target: "db1", Command: "bad \xff utf8 \x00"})
	for _, c := range []struct {
		typ  EventType
		data string
	}{{"x", "a"}, {Resize, "80"}, {Resize, "0x10"}, {Resize, "+8x9"}} {
		if err := s.Record(c.typ, []byte(c.data)); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Record(%q, %q) = %v, want Invalid", c.typ, c.data, err)
		}
		if _, err := s.RecordNoWait(c.typ, []byte(c.data)); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("RecordNoWait(%q, %q) = %v, want Invalid", c.typ, c.data, err)
		}
	}
	if err := s.Close(e.ctx, "bogus"); err != nil {
		t.Fatal(err)
	}
	info, err := e.rec.Get(e.ctx, s.ID())
	if err != nil || info.Status != StatusError || info.Width != 80 || info.Command != "bad \uFFFD utf8 \uFFFD" {
		t.Errorf("Get = %+v, %v", info, err)
	}
	if _, err := e.rec.Get(e.ctx, "nope"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("Get(unknown) = %v, want NotFound", err)
	}
}

func TestTamper(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{chunk: 256})
		closed := func() string {
			s := e.start(t, sshMeta)
			for i := range 20 {
				record(t, s, Output, strings.Repeat("line ", 10)+itoa(i)+"\r\n")
			}
			if err := s.Close(e.ctx, StatusClosed); err != nil {
				t.Fatal(err)
			}
			return s.ID()
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := e.db.ExecContext(e.ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		readCT := func(id string, seq int) []byte {
			var ct []byte
			if err := e.db.QueryRowContext(e.ctx, `SELECT data_ct FROM recording_chunks WHERE session_id = $1 AND seq = $2`, id, seq).Scan(&ct); err != nil {
				t.Fatal(err)
			}
			return ct
		}
		wantTampered := func(what, id string) {
			t.Helper()
			err := e.rec.Replay(e.ctx, id, func(Event) error { return nil })
			if !errors.Is(err, ErrTampered) {
				t.Errorf("%s: Replay = %v, want ErrTampered", what, err)
			}
			var buf bytes.Buffer
			if err := e.rec.WriteAsciicast(e.ctx, id, &buf); !errors.Is(err, ErrTampered) || buf.Len() != 0 {
				t.Errorf("%s: WriteAsciicast = %v with %d bytes written, want ErrTampered and nothing", what, err, buf.Len())
			}
		}

		a := closed()
		ct := readCT(a, 1)
		ct[len(ct)-1] ^= 1
		exec(`UPDATE recording_chunks SET data_ct = $1 WHERE session_id = $2 AND seq = 1`, ct, a)
		wantTampered("flipped bit", a)

		b, c := closed(), closed()
		exec(`UPDATE recording_chunks SET data_ct = $1 WHERE session_id = $2 AND seq = 0`, readCT(c, 0), b)
		wantTampered("chunk from another session", b)

		d := closed()
		exec(`UPDATE recording_chunks SET data_ct = $1 WHERE session_id = $2 AND seq = 2`, readCT(d, 3), d)
		wantTampered("chunk from another position", d)

		f := closed()
		exec(`DELETE FROM recording_chunks WHERE session_id = $1 AND seq = (SELECT MAX(seq) FROM recording_chunks WHERE session_id = $1)`, f)
		wantTampered("last chunk deleted", f)

		g := closed()
		exec(`DELETE FROM recording_chunks WHERE session_id = $1 AND seq = 1`, g)
		wantTampered("middle chunk deleted", g)

		h := closed()
		exec(`UPDATE recording_sessions SET sha256 = $1 WHERE id = $2`, strings.Repeat("0", 64), h)
		wantTampered("hash changed", h)

		if err := e.rec.Replay(e.ctx, c, func(Event) error { return nil }); err != nil {
			t.Errorf("untouched session: %v", err)
		}
	})
}

func TestKill(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		s := e.start(t, sshMeta)
		admin := alice
		admin.Actor = "user:sec"
		if err := e.rec.Kill(e.ctx, admin, s.ID(), "policy violation"); err != nil {
			t.Fatal(err)
		}
		waitDone(t, s.Context(), time.Second)
		var ke KilledError
		if !errors.As(context.Cause(s.Context()), &ke) || ke.Message != "policy violation" || s.KillMessage() != "policy violation" {
			t.Fatalf("cause %v, message %q", context.Cause(s.Context()), s.KillMessage())
		}
		// The gateway closes with the session's (cancelled) context and
		// whatever status: it is stored as killed.
		if err := s.Close(s.Context(), StatusClosed); err != nil {
			t.Fatal(err)
		}
		if info, _ := e.rec.Get(e.ctx, s.ID()); info.Status != StatusKilled {
			t.Errorf("status %q, want killed", info.Status)
		}
		if err := e.rec.Kill(e.ctx, admin, s.ID(), "again"); !errkind.Is(err, errkind.Conflict) {
			t.Errorf("Kill(ended) = %v, want Conflict", err)
		}
		if err := e.rec.Kill(e.ctx, admin, "nope", ""); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("Kill(unknown) = %v, want NotFound", err)
		}
		if k := e.eventsOf(t, "session.kill"); len(k) != 1 || k[0].Actor != "user:sec" || k[0].Details["message"] != "policy violation" {
			t.Errorf("session.kill events %+v", k)
		}
		if ends := e.eventsOf(t, "session.end"); len(ends) != 1 || ends[0].Details["status"] != "killed" {
			t.Errorf("session.end events %+v", ends)
		}
	})
}

func TestKillAcrossProcesses(t *testing.T) {
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(context.Background(), store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	e1 := newEnv(t, open(), envOpts{})
	e2 := newEnv(t, open(), envOpts{unsealKey: e1.key})
	s := e1.start(t, sshMeta)
	record(t, s, Output, "$ ")
	if _, _, err := e2.rec.Join(e2.ctx, s.ID()); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("Join in the other process = %v, want NotFound", err)
	}
	start := time.Now()
	if err := e2.rec.Kill(e2.ctx, alice, s.ID(), "cut by security"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, s.Context(), 2500*time.Millisecond)
	t.Logf("killed from another process after %v", time.Since(start).Round(time.Millisecond))
	if s.KillMessage() != "cut by security" {
		t.Errorf("KillMessage = %q", s.KillMessage())
	}
	if err := s.Close(e1.ctx, StatusClosed); err != nil {
		t.Fatal(err)
	}
	if info, _ := e2.rec.Get(e2.ctx, s.ID()); info.Status != StatusKilled || info.SHA256 == "" {
		t.Errorf("Info %+v", info)
	}
	if evs := e2.replay(t, s.ID()); joined(evs, Output) != "$ " {
		t.Errorf("replay from the other process: %+v", evs)
	}
}

func TestSetDeadline(t *testing.T) {
	e := newEnv(t, openSQLite(t), envOpts{})
	s := e.start(t, sshMeta)
	s.SetDeadline(time.Now().Add(time.Hour))
	s.SetDeadline(time.Now().Add(50 * time.Millisecond)) // replaces the first
	waitDone(t, s.Context(), 2*time.Second)
	if !errors.Is(context.Cause(s.Context()), ErrExpired) {
		t.Fatalf("cause %v, want ErrExpired", context.Cause(s.Context()))
	}
	if err := s.Close(e.ctx, StatusClosed); err != nil {
		t.Fatal(err)
	}
	if info, _ := e.rec.Get(e.ctx, s.ID()); info.Status != StatusExpired {
		t.Errorf("status %q, want expired", info.Status)
	}

	past := e.start(t, sshMeta)
	past.SetDeadline(time.Now().Add(-time.Second))
	waitDone(t, past.Context(), time.Second)
	cleared := e.start(t, sshMeta)
	cleared.SetDeadline(time.Now().Add(30 * time.Millisecond))
	cleared.SetDeadline(time.Time{})
	time.Sleep(100 * time.Millisecond)
	if cleared.Context().Err() != nil {
		t.Error("a cleared deadline still ended the session")
	}
	past.Close(e.ctx, StatusClosed)
	cleared.Close(e.ctx, StatusClosed)
}

func TestJoin(t *testing.T) {
	e := newEnv(t, openSQLite(t), envOpts{})
	s := e.start(t, sshMeta)
	fast, stopFast, err := e.rec.Join(e.ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer stopFast()
	slow, stopSlow, err := e.rec.Join(e.ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer stopSlow()
	gone, stopGone, _ := e.rec.Join(e.ctx, s.ID())
	stopGone()
	if _, ok := <-gone; ok {
		t.Error("a stopped observer's channel is open")
	}

	var seen atomic.Int64
	got := make(chan int)
	go func() {
		n := 0
		for range fast {
			n++
			seen.Add(1)
		}
		got <- n
	}()
	const events = 3 * observerBuffer
	begin := time.Now()
	for i := range events {
		record(t, s, Output, "x"+itoa(i))
		if i%256 == 255 { // let the fast observer keep up, however loaded the machine
			for deadline := time.Now().Add(5 * time.Second); seen.Load() < int64(i+1) && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("recording with a stuck observer took %v", d)
	}
	// The slow observer was dropped: its channel holds what fit, then ends.
	n := 0
	for range slow {
		n++
	}
	if n != observerBuffer {
		t.Errorf("slow observer got %d events, want %d then closed", n, observerBuffer)
	}
	if err := s.Close(e.ctx, StatusClosed); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != events {
		t.Errorf("fast observer got %d events, want %d", n, events)
	}
	if _, _, err := e.rec.Join(e.ctx, s.ID()); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("Join(closed) = %v, want NotFound", err)
	}
}

func TestStoreDown(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{chunk: 1024})
		s := e.start(t, sshMeta)
		record(t, s, Output, "before\r\n")
		e.db.Close()
		deadline := time.Now().Add(5 * time.Second)
		var err error
		for err == nil && time.Now().Before(deadline) {
			err = s.Record(Output, []byte(strings.Repeat("output after the store closed\r\n", 40)))
		}
		if !errors.Is(err, ErrRecordingFailed) {
			t.Fatalf("Record with the store closed = %v, want ErrRecordingFailed", err)
		}
		waitDone(t, s.Context(), time.Second)
		if !errors.Is(context.Cause(s.Context()), ErrRecordingFailed) {
			t.Errorf("cause %v", context.Cause(s.Context()))
		}
		if err := s.Close(e.ctx, StatusClosed); err == nil {
			t.Error("Close with the store closed succeeded")
		}
	})
}

func TestCrashRecoverySQLite(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	db, err := store.Open(context.Background(), store.Config{SQLitePath: dir + "/w.db"})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, db, envOpts{chunk: 64, now: clock.Now})
	s := e.start(t, sshMeta)
	clock.Advance(5 * time.Second)
	record(t, s, Output, strings.Repeat("x", 100))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var n int
		e.db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM recording_chunks WHERE session_id = $1`, s.ID()).Scan(&n)
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no chunk stored")
		}
	}
	clock.Advance(time.Hour)
	// A restart: a new Recorder on the same store finds the session active.
	r2, err := New(e.ctx, Config{DB: e.db, Audit: e.audit, Barrier: e.barrier, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	info, err := r2.Get(e.ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != StatusError || !info.EndedAt.Equal(info.StartedAt.Add(5*time.Second)) || info.SHA256 != "" {
		t.Errorf("recovered session %+v, want error ended at its last chunk", info)
	}
	if ends := e.eventsOf(t, "session.end"); len(ends) != 1 || ends[0].Details["recovered"] != "true" || ends[0].Outcome != "failure" {
		t.Errorf("session.end events %+v", ends)
	}
	var evs []Event
	if err := r2.Replay(e.ctx, s.ID(), func(ev Event) error { evs = append(evs, ev); return nil }); err != nil || len(evs) != 1 {
		t.Errorf("replay of a recovered session: %d events, %v", len(evs), err)
	}
}

func TestCrashRecoveryPostgres(t *testing.T) {
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(context.Background(), store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	e1 := newEnv(t, open(), envOpts{})
	s := e1.start(t, sshMeta)
	// A second process starting now leaves the live session alone...
	e2 := newEnv(t, open(), envOpts{unsealKey: e1.key})
	if info, _ := e2.rec.Get(e2.ctx, s.ID()); info.Status != StatusActive {
		t.Fatalf("live session recovered: %+v", info)
	}
	// ...one whose clock says its heartbeat is 31 s old recovers it, and
	// the first process then ends the session, whose recording can no
	// longer complete.
	later := func() time.Time { return time.Now().Add(31 * time.Second) }
	if _, err := New(e2.ctx, Config{DB: e2.db, Audit: e2.audit, Barrier: e2.barrier, Now: later}); err != nil {
		t.Fatal(err)
	}
	if info, _ := e2.rec.Get(e2.ctx, s.ID()); info.Status != StatusError {
		t.Errorf("stale session not recovered: %+v", info)
	}
	waitDone(t, s.Context(), 2500*time.Millisecond)
	if !errors.Is(context.Cause(s.Context()), ErrRecordingFailed) {
		t.Errorf("cause %v", context.Cause(s.Context()))
	}
	if err := s.Close(e1.ctx, StatusClosed); !errkind.Is(err, errkind.Conflict) {
		t.Errorf("Close of a recovered session = %v, want Conflict", err)
	}
}

func TestListPrune(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		clock := newClock()
		e := newEnv(t, open(t), envOpts{now: clock.Now, retention: 24 * time.Hour})
		old := e.start(t, sshMeta)
		record(t, old, Output, "old")
		old.Close(e.ctx, StatusClosed)
		clock.Advance(time.Minute)
		db := e.start(t, Meta{Kind: DB, Principal: "user:bob", Target: "db1"})
		clock.Advance(time.Second)
		live := e.start(t, sshMeta)
		live.AddBytes(5, 6)
		clock.Advance(time.Minute)
		db.Close(e.ctx, StatusClosed)

		for _, c := range []struct {
			f    Filter
			want []string
		}{
			{Filter{}, []string{live.ID(), db.ID(), old.ID()}},
			{Filter{Kind: DB}, []string{db.ID()}},
			{Filter{Principal: "user:alice"}, []string{live.ID(), old.ID()}},
			{Filter{Active: true}, []string{live.ID()}},
			{Filter{Limit: 1}, []string{live.ID()}},
		} {
			got, err := e.rec.List(e.ctx, c.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, i := range got {
				ids = append(ids, i.ID)
			}
			if strings.Join(ids, ",") != strings.Join(c.want, ",") {
				t.Errorf("List(%+v) = %v, want %v", c.f, ids, c.want)
			}
		}
		if info, _ := e.rec.Get(e.ctx, live.ID()); info.BytesIn != 5 || info.BytesOut != 6 {
			t.Errorf("live byte counts %+v", info)
		}
		js, _ := json.Marshal(Info{ID: "x", StartedAt: time.Unix(1, 0)})
		if s := string(js); !strings.Contains(s, `"started_at"`) || strings.Contains(s, "ended_at") || strings.Contains(s, "sha256") {
			t.Errorf("Info JSON %s", s)
		}

		e.rec.stale = 1000 * 24 * time.Hour       // the fake clock's jumps must not make the live session look orphaned
		clock.Advance(24*time.Hour - time.Minute) // old ended 24h02m ago, db 23h59m59s ago
		n, err := e.rec.Prune(e.ctx)
		if err != nil || n != 1 {
			t.Fatalf("Prune = %d, %v; want 1", n, err)
		}
		if _, err := e.rec.Get(e.ctx, old.ID()); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("pruned session: %v", err)
		}
		var chunks int
		e.db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM recording_chunks WHERE session_id = $1`, old.ID()).Scan(&chunks)
		if chunks != 0 {
			t.Errorf("%d chunks left of a pruned session", chunks)
		}
		clock.Advance(365 * 24 * time.Hour)
		if n, err := e.rec.Prune(e.ctx); err != nil || n != 1 {
			t.Errorf("second Prune = %d, %v; want 1 (the live session is kept)", n, err)
		}
		if p := e.eventsOf(t, "recording.prune"); len(p) != 2 || p[0].Details["count"] != "1" {
			t.Errorf("recording.prune events %+v", p)
		}
		live.Close(e.ctx, StatusClosed)
	})
}

func TestRewrap(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{chunk: 128})
		s := e.start(t, sshMeta)
		for i := range 10 {
			record(t, s, Output, strings.Repeat("y", 50)+itoa(i))
		}
		s.Close(e.ctx, StatusClosed)
		var chunks int
		e.db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM recording_chunks`).Scan(&chunks)
		if _, err := e.barrier.Rotate(e.ctx); err != nil {
			t.Fatal(err)
		}
		n, err := e.rec.Rewrap(e.ctx, e.barrier)
		if err != nil || n != chunks || n < 3 {
			t.Fatalf("Rewrap = %d, %v; want %d", n, err, chunks)
		}
		if n, err := e.rec.Rewrap(e.ctx, e.barrier); err != nil || n != 0 {
			t.Errorf("second Rewrap = %d, %v; want 0", n, err)
		}
		if evs := e.replay(t, s.ID()); len(evs) != 10 {
			t.Errorf("%d events after rewrap", len(evs))
		}
	})
}

func TestNoGoroutinesLeft(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{chunk: 256})
		before := runtime.NumGoroutine()
		var sessions []*Session
		for range 20 {
			s := e.start(t, sshMeta)
			record(t, s, Output, strings.Repeat("z", 1000))
			s.SetDeadline(time.Now().Add(time.Hour))
			e.rec.Join(e.ctx, s.ID())
			sessions = append(sessions, s)
		}
		time.Sleep(1100 * time.Millisecond) // let the poller run once (PostgreSQL)
		for _, s := range sessions {
			if err := s.Close(e.ctx, StatusClosed); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				n := runtime.Stack(buf, true)
				t.Fatalf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:n])
			}
		}
	})
}
