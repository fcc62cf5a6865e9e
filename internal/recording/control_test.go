package recording

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/store"
)

// syncLog collects log output written from other goroutines.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// KillPrincipal ends the live SSH and database sessions of one principal,
// audited, and leaves everyone else's alone.
func TestKillPrincipal(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{})
		lifecycle := audit.Origin{Actor: "system:lifecycle"}
		ended := e.start(t, sshMeta)
		ended.Close(e.ctx, StatusClosed)
		ssh := e.start(t, sshMeta)
		db := e.start(t, Meta{Kind: DB, Principal: "user:alice", Target: "db1"})
		bob := e.start(t, Meta{Kind: SSH, Principal: "user:bob", Target: "web1"})
		alicia := e.start(t, Meta{Kind: SSH, Principal: "user:alice2", Target: "web1"}) // not a prefix match

		ids, err := e.rec.KillPrincipal(e.ctx, lifecycle, "user:alice", "your account was disabled")
		want := []string{ssh.ID(), db.ID()}
		slices.Sort(want)
		if err != nil || !slices.Equal(ids, want) {
			t.Fatalf("KillPrincipal = %v, %v; want %v", ids, err, want)
		}
		for _, s := range []*Session{ssh, db} {
			waitDone(t, s.Context(), time.Second)
			var k KilledError
			if !errors.As(context.Cause(s.Context()), &k) || k.Message != "your account was disabled" {
				t.Errorf("cause %v", context.Cause(s.Context()))
			}
			if s.KillMessage() != "your account was disabled" {
				t.Errorf("KillMessage %q", s.KillMessage())
			}
		}
		for _, s := range []*Session{bob, alicia} {
			if s.Context().Err() != nil {
				t.Errorf("session of %s was ended", s.meta.Principal)
			}
		}
		kills := e.eventsOf(t, "session.kill")
		var resources []string
		for _, ev := range kills {
			if ev.Actor != "system:lifecycle" || ev.Details["reason"] != "principal" || ev.Details["message"] != "your account was disabled" {
				t.Errorf("session.kill event %+v", ev)
			}
			resources = append(resources, strings.TrimPrefix(ev.Resource, "session:"))
		}
		slices.Sort(resources)
		if !slices.Equal(resources, want) {
			t.Errorf("session.kill for %v, want %v", resources, want)
		}
		for _, s := range []*Session{ssh, db} {
			if err := s.Close(e.ctx, StatusClosed); err != nil {
				t.Fatal(err)
			}
			if i, _ := e.rec.Get(e.ctx, s.ID()); i.Status != StatusKilled || i.SHA256 == "" {
				t.Errorf("after Close: %+v, want killed with a hash", i)
			}
		}
		if ids, err := e.rec.KillPrincipal(e.ctx, lifecycle, "user:alice", "again"); err != nil || len(ids) != 0 {
			t.Errorf("second KillPrincipal = %v, %v; want none", ids, err)
		}
		if _, err := e.rec.KillPrincipal(e.ctx, lifecycle, "", "x"); err == nil {
			t.Error("KillPrincipal without a principal succeeded")
		}
		bob.Close(e.ctx, StatusClosed)
		alicia.Close(e.ctx, StatusClosed)
	})
}

// A principal's live session in this process ends even when the database
// cannot take the kill.
func TestKillPrincipalFailsClosed(t *testing.T) {
	e := newEnv(t, openSQLite(t), envOpts{})
	s := e.start(t, sshMeta)
	defer s.Close(e.ctx, StatusClosed)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel() // the transaction cannot run
	ids, err := e.rec.KillPrincipal(ctx, audit.Origin{Actor: "system:lifecycle"}, "user:alice", "disabled")
	if err == nil || !slices.Equal(ids, []string{s.ID()}) {
		t.Fatalf("KillPrincipal = %v, %v; want the live session and the error", ids, err)
	}
	waitDone(t, s.Context(), time.Second)
}
