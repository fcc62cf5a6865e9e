package recording

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// system is the origin of the events the Recorder writes on its own.
var system = audit.Origin{Actor: "system:recording"}

// register adds s to the live sessions and, on PostgreSQL, starts the
// poller if it is the first.
func (r *Recorder) register(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[s.id] = s
	if r.db.Kind() == store.Postgres && r.pollStop == nil {
		r.pollStop, r.pollDone = make(chan struct{}), make(chan struct{})
		go r.pollLoop(r.pollStop, r.pollDone)
	}
}

// unregister removes s from the live sessions and stops the poller, and
// waits for it, when s was the last.
func (r *Recorder) unregister(s *Session) {
	r.mu.Lock()
	delete(r.live, s.id)
	var stop, done chan struct{}
	if len(r.live) == 0 && r.pollStop != nil {
		stop, done = r.pollStop, r.pollDone
		r.pollStop, r.pollDone = nil, nil
	}
	r.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// session returns the live session id of this Recorder, or nil.
func (r *Recorder) session(id string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[id]
}

// pollLoop polls the rows of the live sessions every r.poll until stop is
// closed, then closes done.
func (r *Recorder) pollLoop(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.pollOnce()
		}
	}
}

// pollOnce refreshes the heartbeat of this Recorder's active sessions in
// one statement, kills those another process asked to kill, and ends
// those whose row is no longer active (recovered as orphans after a long
// database outage: their recording can no longer be completed).
func (r *Recorder) pollOnce() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*r.poll)
	defer cancel()
	rows, err := r.db.QueryContext(ctx, `UPDATE recording_sessions SET heartbeat_at = $1
		WHERE owner = $2 AND status = 'active' RETURNING id, kill_requested, kill_message`,
		store.Micros(r.now()), r.owner)
	if err != nil {
		r.log.Warn("recording: polling live sessions failed", "err", err)
		return
	}
	seen := map[string]bool{}
	type kill struct{ id, msg string }
	var kills []kill
	for rows.Next() {
		var id, msg string
		var k int
		if err := rows.Scan(&id, &k, &msg); err != nil {
			rows.Close()
			r.log.Warn("recording: polling live sessions failed", "err", err)
			return
		}
		seen[id] = true
		if k != 0 {
			kills = append(kills, kill{id, msg})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		r.log.Warn("recording: polling live sessions failed", "err", err)
		return
	}
	for _, k := range kills {
		if s := r.session(k.id); s != nil {
			s.kill(k.msg)
		}
	}
	r.mu.Lock()
	var lost []*Session
	for id, s := range r.live {
		if !seen[id] {
			lost = append(lost, s)
		}
	}
	r.mu.Unlock()
	for _, s := range lost {
		s.mu.Lock()
		closing := s.closed
		s.mu.Unlock()
		if !closing {
			s.cancel(fmt.Errorf("%w: the session's row was ended by another process", ErrRecordingFailed))
		}
	}
}

// Kill ends a live session with message, shown to its user: it marks the
// session's row and audits "session.kill" in one transaction, then cancels
// the session's context with cause KilledError{message} if this process
// serves it; otherwise the serving process notices within about a second.
// The gateway then closes the connection and the session. An unknown
// session is NotFound, an ended one a Conflict.
func (r *Recorder) Kill(ctx context.Context, o audit.Origin, id, message string) error {
	message = sanitize(message, maxKillMessage)
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE recording_sessions SET kill_requested = 1, kill_message = $1
			WHERE id = $2 AND status = 'active'`, message, id)
		if err != nil {
			return fmt.Errorf("recording: kill session %s: %w", quoteID(id), err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			var status string
			err := tx.QueryRowContext(ctx, `SELECT status FROM recording_sessions WHERE id = $1`, id).Scan(&status)
			if errors.Is(err, sql.ErrNoRows) {
				return errkind.New(errkind.NotFound, "recording: no session %s", quoteID(id))
			}
			if err != nil {
				return fmt.Errorf("recording: kill session %s: %w", quoteID(id), err)
			}
			return errkind.New(errkind.Conflict, "recording: session %s has ended (%s)", id, status)
		}
		details := map[string]string{}
		if message != "" {
			details["message"] = message
		}
		_, err = r.audit.AppendTx(ctx, tx, o.Event("session.kill", "session:"+id, audit.OutcomeSuccess, details))
		return err
	})
	if err != nil {
		return err
	}
	if s := r.session(id); s != nil {
		s.kill(message)
	}
	return nil
}

// KillPrincipal ends every live session of principal ("user:alice"), SSH
// and database alike, with message, shown to its user: the server calls it
// when a user is disabled or deleted. In one transaction it marks the
// principal's active rows and audits a "session.kill" per session (details
// message and reason "principal"); then it cancels, with cause
// KilledError{message}, each of the principal's sessions live in this
// process, which end at once. Sessions served by another process (several
// servers on one PostgreSQL database) end when their process polls, within
// about a second.
//
// The sessions live in this process are cancelled even when the
// transaction fails (they then end with status "killed" and their own
// "session.end" event, without a "session.kill"): a principal that lost
// its access must not keep a session because the database hiccupped. It
// returns the ids of the sessions it ended, sorted, and the transaction's
// error.
func (r *Recorder) KillPrincipal(ctx context.Context, o audit.Origin, principal, message string) ([]string, error) {
	principal = sanitize(principal, maxField)
	if principal == "" {
		return nil, errkind.New(errkind.Invalid, "recording: kill sessions of whom? no principal given")
	}
	return r.killWhere(ctx, o, "principal", principal, message, func(m Meta) bool { return m.Principal == principal })
}

// KillLease ends every live session that uses the vault lease leaseID,
// as KillPrincipal does (audit reason "lease"): the server calls it when a
// lease ends while sessions still use it (an administrator's forced
// check-in, the holder checking in through the API).
func (r *Recorder) KillLease(ctx context.Context, o audit.Origin, leaseID, message string) ([]string, error) {
	leaseID = sanitize(leaseID, maxField)
	if leaseID == "" {
		return nil, errkind.New(errkind.Invalid, "recording: kill sessions of which lease? none given")
	}
	return r.killWhere(ctx, o, "lease_id", leaseID, message, func(m Meta) bool { return m.LeaseID == leaseID })
}

// killWhere kills the active sessions whose column equals value (in the
// store, audited once per session: one already being killed is not marked
// or audited again) and the live ones in this process that match.
func (r *Recorder) killWhere(ctx context.Context, o audit.Origin, column, value, message string, match func(Meta) bool) ([]string, error) {
	message = sanitize(message, maxKillMessage)
	reason := column
	if column == "lease_id" {
		reason = "lease"
	}
	var ids []string
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		ids = ids[:0]
		rows, err := tx.QueryContext(ctx, `UPDATE recording_sessions SET kill_requested = 1, kill_message = $1
			WHERE `+column+` = $2 AND status = 'active' AND kill_requested = 0 RETURNING id`, message, value)
		if err != nil {
			return fmt.Errorf("recording: kill sessions of %s: %w", quoteID(value), err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("recording: kill sessions of %s: %w", quoteID(value), err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("recording: kill sessions of %s: %w", quoteID(value), err)
		}
		slices.Sort(ids)
		for _, id := range ids {
			details := map[string]string{"reason": reason, reason: value}
			if message != "" {
				details["message"] = message
			}
			if _, err := r.audit.AppendTx(ctx, tx, o.Event("session.kill", "session:"+id, audit.OutcomeSuccess, details)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		ids = nil
	}
	r.mu.Lock()
	var local []*Session
	for _, s := range r.live {
		if match(s.meta) {
			local = append(local, s)
		}
	}
	r.mu.Unlock()
	for _, s := range local {
		s.kill(message)
		if !slices.Contains(ids, s.id) {
			ids = append(ids, s.id)
		}
	}
	slices.Sort(ids)
	return ids, err
}

// Join streams the events of a live session served by this process as
// they are recorded, from now on (not what came before). The channel is
// buffered; an observer that falls 1024 events behind is dropped (its
// channel closed) rather than slowing the session. The channel is closed
// when the session ends, when ctx ends, or when stop is called. A session
// not live in this process is NotFound: with several server processes on
// one PostgreSQL database, join on the one serving the session.
func (r *Recorder) Join(ctx context.Context, id string) (<-chan Event, func(), error) {
	s := r.session(id)
	if s == nil {
		return nil, nil, errkind.New(errkind.NotFound, "recording: session %s is not live in this process", quoteID(id))
	}
	o := &observer{ch: make(chan Event, observerBuffer)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, errkind.New(errkind.NotFound, "recording: session %s is not live in this process", quoteID(id))
	}
	s.observers[o] = struct{}{}
	s.mu.Unlock()
	drop := func() {
		s.mu.Lock()
		s.dropLocked(o)
		s.mu.Unlock()
	}
	stopAfter := context.AfterFunc(ctx, drop)
	return o.ch, func() { stopAfter(); drop() }, nil
}

// dropLocked ends observer o, if it has not ended yet. mu must be held.
func (s *Session) dropLocked(o *observer) {
	if _, ok := s.observers[o]; ok {
		delete(s.observers, o)
		close(o.ch)
	}
}

// recoverOrphans ends the sessions a dead process left active: every
// active session when all is set (SQLite, at start), else those whose
// heartbeat is older than r.stale. Each becomes "error", ended at its last
// chunk, with an audited "session.end". It returns how many it ended.
func (r *Recorder) recoverOrphans(ctx context.Context, all bool) (int, error) {
	cutoff := store.Micros(r.now().Add(-r.stale))
	if all {
		cutoff = 1<<63 - 1
	}
	type orphan struct {
		id, principal string
		end           int64
	}
	rows, err := r.db.QueryContext(ctx, `SELECT s.id, s.principal, COALESCE((SELECT MAX(c.created_at) FROM recording_chunks c
		WHERE c.session_id = s.id), s.started_at) FROM recording_sessions s WHERE s.status = 'active' AND s.heartbeat_at < $1`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("recording: find orphaned sessions: %w", err)
	}
	var orphans []orphan
	for rows.Next() {
		var o orphan
		if err := rows.Scan(&o.id, &o.principal, &o.end); err != nil {
			rows.Close()
			return 0, fmt.Errorf("recording: find orphaned sessions: %w", err)
		}
		orphans = append(orphans, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("recording: find orphaned sessions: %w", err)
	}
	n := 0
	for _, o := range orphans {
		ended := false
		err := r.db.InTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE recording_sessions SET status = 'error', ended_at = $1
				WHERE id = $2 AND status = 'active' AND heartbeat_at < $3`, o.end, o.id, cutoff)
			if err != nil {
				return err
			}
			if k, _ := res.RowsAffected(); k != 1 {
				return nil // recovered by another process, or alive after all
			}
			ended = true
			_, err = r.audit.AppendTx(ctx, tx, system.Event("session.end", "session:"+o.id, audit.OutcomeFailure,
				map[string]string{"status": StatusError, "recovered": "true", "principal": o.principal}))
			return err
		})
		if err != nil {
			return n, fmt.Errorf("recording: recover orphaned session %s: %w", o.id, err)
		}
		if !ended {
			continue
		}
		n++
		r.log.Warn("recording: a session left active by a stopped process was marked error", "session", o.id)
	}
	return n, nil
}
