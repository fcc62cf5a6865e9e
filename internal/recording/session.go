package recording

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Meta describes a session when it starts.
type Meta struct {
	Kind      Kind
	Principal string // the person or machine, "user:alice"; required
	Target    string // required
	Account   string // "target/user" of the upstream account, or the ephemeral user
	Source    string // client IP address
	GrantID   string
	LeaseID   string
	Command   string // the ssh exec command line; "" for a shell or a database session
	PTY       bool   // interactive, with a terminal
	// Width and Height are the terminal's size. Zero: 80x24 (the
	// asciicast header needs one).
	Width, Height int
}

// maxPending is how many full chunks may wait for the writer before Record
// waits for it (and RecordNoWait reports a backlog): the bound on a
// session's memory when the database is slow.
const maxPending = 4

// writeTimeout bounds the storing of one chunk and Close's final write.
const writeTimeout = 30 * time.Second

// Session is a recording in progress. Its methods are safe for concurrent
// use.
type Session struct {
	r      *Recorder
	id     string
	meta   Meta
	start  time.Time
	ctx    context.Context
	cancel context.CancelCauseFunc
	in     atomic.Int64
	out    atomic.Int64

	// mu protects the following; cond (on mu) is signalled when pending
	// shrinks or the writer stops.
	mu        sync.Mutex
	cond      *sync.Cond
	buf       []byte    // event lines not yet handed to the writer (the header, at first)
	bufEvents int64     // events in buf
	carry     [2][]byte // the incomplete UTF-8 character at the end of the last Output and Input
	last      float64   // time of the last event
	pending   []chunk   // full chunks for the writer, in order
	writing   bool      // a writer goroutine runs
	drained   []func()  // NotifyDrained's functions, called by the writer once not backlogged
	failed    error     // the recording failed (wraps ErrRecordingFailed)
	closed    bool      // Close began: Record refuses
	observers map[*observer]struct{}
	deadline  *time.Timer
	killMsg   string

	// The writer goroutine (at most one runs) owns the following; others
	// read them only once writing is false, under mu.
	seq    int64     // chunks stored
	hash   hash.Hash // SHA-256 of the chunks stored
	stored int64     // bytes of the chunks stored
	events int64     // events in the chunks stored

	// closeMu serialises Close and protects closeDone and closeErr.
	closeMu   sync.Mutex
	closeDone bool
	closeErr  error
}

// chunk is a run of whole lines to store as one chunk.
type chunk struct {
	data   []byte
	events int64
}

// observer is a Join.
type observer struct {
	ch chan Event // closed by the session (under mu) when the observer is dropped
}

// observerBuffer is how many events an observer may lag before it is
// dropped.
const observerBuffer = 1024

// sanitize makes s valid UTF-8 without NUL bytes (PostgreSQL TEXT and the
// audit log accept nothing else), at most n bytes.
func sanitize(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	return clip(s, n)
}

// Start records a new session: it writes the session's row and the audit
// event "session.start" in one transaction and returns the Session. An
// error means the session must not go ahead. The Session's context is not
// derived from ctx; end it with Close.
func (r *Recorder) Start(ctx context.Context, o audit.Origin, m Meta) (*Session, error) {
	switch {
	case m.Kind != SSH && m.Kind != DB:
		return nil, errkind.New(errkind.Invalid, "recording: session kind %q is not ssh or db", clip(string(m.Kind), 16))
	case m.Principal == "" || m.Target == "":
		return nil, errkind.New(errkind.Invalid, "recording: a session needs a principal and a target")
	case m.Width < 0 || m.Height < 0 || m.Width > maxTerminal || m.Height > maxTerminal:
		return nil, errkind.New(errkind.Invalid, "recording: terminal size %dx%d out of range", m.Width, m.Height)
	}
	for _, f := range []*string{&m.Principal, &m.Target, &m.Account, &m.Source, &m.GrantID, &m.LeaseID} {
		*f = sanitize(*f, maxField)
	}
	m.Command = sanitize(m.Command, maxCommand)
	if m.Width == 0 || m.Height == 0 {
		m.Width, m.Height = 80, 24
	}
	id := randomID()
	now := r.now()
	title := m.Principal + " on " + m.Target
	if m.Account != "" {
		title += " as " + m.Account
	}
	header := encodeHeader(Header{Version: 2, Width: m.Width, Height: m.Height, Timestamp: now.Unix(),
		Title: clip(title, 3*maxField), Command: m.Command})

	details := map[string]string{
		"kind": string(m.Kind), "principal": m.Principal, "target": m.Target, "pty": strconv.FormatBool(m.PTY),
	}
	for k, v := range map[string]string{"account": m.Account, "grant_id": m.GrantID, "lease_id": m.LeaseID,
		"command": clip(m.Command, audit.MaxFieldBytes)} {
		if v != "" {
			details[k] = v
		}
	}
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO recording_sessions (id, kind, principal, target, account, source,
			command, pty, width, height, grant_id, lease_id, started_at, status, owner, heartbeat_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'active', $14, $13)`,
			id, string(m.Kind), m.Principal, m.Target, m.Account, m.Source, m.Command, boolInt(m.PTY),
			m.Width, m.Height, m.GrantID, m.LeaseID, store.Micros(now), r.owner); err != nil {
			return fmt.Errorf("recording: start session: %w", err)
		}
		_, err := r.audit.AppendTx(ctx, tx, o.Event("session.start", "session:"+id, audit.OutcomeSuccess, details))
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &Session{r: r, id: id, meta: m, start: now, buf: header, hash: sha256.New(),
		observers: map[*observer]struct{}{}}
	s.cond = sync.NewCond(&s.mu)
	s.ctx, s.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	r.register(s)
	return s, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ID returns the session's id.
func (s *Session) ID() string { return s.id }

// Context returns a context that is cancelled when the session must end:
// killed (cause KilledError), past its deadline (cause ErrExpired), its
// recording failed (cause wrapping ErrRecordingFailed), or closed. The
// gateway closes the connection when it is done.
func (s *Session) Context() context.Context { return s.ctx }

// KillMessage returns the message given to Kill, or "" if the session was
// not killed.
func (s *Session) KillMessage() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killMsg
}

// SetDeadline makes the session end at t (the expiry of its grant or
// lease): its context is then cancelled with cause ErrExpired. A later call
// replaces the deadline; the zero time removes it. A t in the past ends the
// session at once.
func (s *Session) SetDeadline(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deadline != nil {
		s.deadline.Stop()
		s.deadline = nil
	}
	if t.IsZero() || s.closed {
		return
	}
	d := t.Sub(s.r.now())
	if d <= 0 {
		s.cancel(ErrExpired)
		return
	}
	s.deadline = time.AfterFunc(d, func() { s.cancel(ErrExpired) })
}

// kill ends the session with message.
func (s *Session) kill(message string) {
	s.mu.Lock()
	if s.killMsg == "" {
		s.killMsg = message
	}
	s.mu.Unlock()
	s.cancel(KilledError{Message: message})
}

// AddBytes adds to the bytes the session carried from the client (in) and
// to it (out), stored at Close.
func (s *Session) AddBytes(in, out int64) {
	s.in.Add(in)
	s.out.Add(out)
}

// Record appends an event of type typ with data, timed now. Output and
// Input data is terminal bytes: a character split across two Records is
// kept whole, and invalid UTF-8 becomes U+FFFD. Resize data is "COLSxROWS".
// Data longer than 32 KiB is split into several events of the same time.
//
// Record buffers; it waits for the database only when several chunks are
// queued. It returns an error once the recording has failed (wrapping
// ErrRecordingFailed) or after Close (ErrClosed): the gateway must then end
// the session.
func (s *Session) Record(typ EventType, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if appended, err := s.recordLocked(typ, data); err != nil || !appended {
		return err
	}
	for s.backloggedLocked() {
		s.cond.Wait()
	}
	return s.failed
}

// RecordNoWait is Record for a caller that must not wait, such as an
// event loop relaying many sessions: it validates and appends exactly as
// Record does, and fails in the same cases, but it never waits for the
// database. When it returns a nil error the event is recorded (it will be
// stored, in order, unless the recording fails later); backlogged then
// reports that maxPending (4) chunks are waiting for the database, as
// Record would have waited.
//
// A caller that sees backlogged must stop producing events as soon as it
// can (stop reading the peer whose data it records) and wait for the
// function it gives NotifyDrained: the events it still has to record
// meanwhile are accepted, so none is lost, but each adds to the session's
// memory.
func (s *Session) RecordNoWait(typ EventType, data []byte) (backlogged bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.recordLocked(typ, data); err != nil {
		return false, err
	}
	return s.backloggedLocked(), nil
}

// NotifyDrained arranges for fn to be called once when the session is no
// longer backlogged (see RecordNoWait): when fewer than maxPending chunks
// wait for the database, or the recording failed, or Close stored what
// was left. If that is already so, NotifyDrained calls fn itself, in the
// caller's goroutine, before it returns; otherwise the writer goroutine
// calls it, without holding the session's lock, as soon as it is so. fn
// must not block: it holds up the writer. Each call registers one more
// function, and every one is called exactly once. A backlog always has a
// writer working on it, and each chunk it stores (or fails to store,
// within 30 seconds) shrinks it, so fn is called in bounded time unless
// the caller keeps adding chunks with RecordNoWait.
func (s *Session) NotifyDrained(fn func()) {
	s.mu.Lock()
	if s.backloggedLocked() {
		s.drained = append(s.drained, fn)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	fn()
}

// recordLocked validates an event and appends it (appended is false when
// there was nothing to append), for Record and RecordNoWait. mu must be
// held.
func (s *Session) recordLocked(typ EventType, data []byte) (appended bool, err error) {
	if !typ.valid() {
		return false, errkind.New(errkind.Invalid, "recording: unknown event type %q", clip(string(typ), 8))
	}
	if typ == Resize {
		if _, _, ok := parseSize(string(data)); !ok {
			return false, errkind.New(errkind.Invalid, "recording: resize data %q is not COLSxROWS", clip(string(data), 16))
		}
	}
	switch {
	case s.failed != nil:
		return false, s.failed
	case s.closed:
		return false, ErrClosed
	}
	if c := carrySlot(typ); c >= 0 {
		if len(s.carry[c]) > 0 {
			data = append(s.carry[c], data...)
			s.carry[c] = nil
		}
		if n := incompleteTail(data); n > 0 {
			s.carry[c] = append([]byte(nil), data[len(data)-n:]...)
			data = data[:len(data)-n]
		}
	}
	if len(data) == 0 && typ != Note {
		return false, nil
	}
	s.appendLocked(s.elapsed(), typ, data)
	return true, nil
}

// backloggedLocked reports whether maxPending chunks wait for a writer
// that has not failed. mu must be held.
func (s *Session) backloggedLocked() bool {
	return len(s.pending) >= maxPending && s.failed == nil
}

// takeDrainedLocked returns the functions NotifyDrained registered, and
// forgets them, once the session is no longer backlogged. mu must be
// held; the caller calls them after releasing it.
func (s *Session) takeDrainedLocked() []func() {
	if len(s.drained) == 0 || s.backloggedLocked() {
		return nil
	}
	fns := s.drained
	s.drained = nil
	return fns
}

// elapsed returns the time of a new event: seconds since the start, never
// less than the last event's. mu must be held.
func (s *Session) elapsed() float64 {
	t := s.r.now().Sub(s.start).Seconds()
	if t < s.last {
		t = s.last
	}
	s.last = t
	return t
}

// appendLocked adds events for data at t, handing full chunks to the
// writer and copying the events to observers. mu must be held.
func (s *Session) appendLocked(t float64, typ EventType, data []byte) {
	for first := true; first || len(data) > 0; first = false {
		piece := data
		if len(piece) > maxEventData {
			n := maxEventData
			for i := 0; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(piece[n]); i++ {
				n--
			}
			piece = piece[:n]
		}
		data = data[len(piece):]
		s.buf = appendEvent(s.buf, t, typ, piece)
		s.bufEvents++
		if len(s.observers) > 0 {
			ev := Event{Time: t, Type: typ, Data: strings.ToValidUTF8(string(piece), "\uFFFD")}
			for o := range s.observers {
				select {
				case o.ch <- ev:
				default: // too slow: dropped rather than slowing the session
					s.dropLocked(o)
				}
			}
		}
		if len(s.buf) >= s.r.chunk {
			s.handOffLocked()
		}
	}
}

// carrySlot returns the index in carry for typ, or -1 if typ's data is not
// terminal bytes.
func carrySlot(typ EventType) int {
	switch typ {
	case Output:
		return 0
	case Input:
		return 1
	}
	return -1
}

// incompleteTail returns the length of the incomplete UTF-8 character that
// ends b (0 if b ends with a whole character or with invalid bytes).
func incompleteTail(b []byte) int {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return 0
		}
		if utf8.RuneStart(c) {
			if c >= 0xC2 && c <= 0xF4 && !utf8.FullRune(b[len(b)-i:]) {
				return i
			}
			return 0
		}
	}
	return 0
}

// handOffLocked queues buf as a chunk and starts the writer if none runs.
// mu must be held.
func (s *Session) handOffLocked() {
	if len(s.buf) == 0 {
		return
	}
	s.pending = append(s.pending, chunk{data: s.buf, events: s.bufEvents})
	s.buf, s.bufEvents = nil, 0
	if !s.writing && s.failed == nil {
		s.writing = true
		go s.write()
	}
}

// write stores the pending chunks in order and ends when none is left or
// one fails; a failure fails the recording and cancels the session. It
// calls NotifyDrained's functions once the backlog is gone.
func (s *Session) write() {
	for {
		s.mu.Lock()
		if len(s.pending) == 0 || s.failed != nil {
			s.pending = nil
			s.writing = false
			s.cond.Broadcast()
			fns := s.takeDrainedLocked()
			s.mu.Unlock()
			for _, fn := range fns {
				fn()
			}
			return
		}
		c := s.pending[0]
		s.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err := s.r.storeChunk(ctx, s.id, s.seq, c.data)
		cancel()
		if err == nil {
			s.hash.Write(c.data)
			s.seq++
			s.stored += int64(len(c.data))
			s.events += c.events
		}

		s.mu.Lock()
		if err != nil {
			s.failed = fmt.Errorf("%w: %w", ErrRecordingFailed, err)
			s.r.log.Error("recording: storing a chunk failed; ending the session", "session", s.id, "err", err)
			s.cancel(s.failed)
		} else {
			s.pending = s.pending[1:]
		}
		s.cond.Broadcast()
		fns := s.takeDrainedLocked()
		s.mu.Unlock()
		for _, fn := range fns {
			fn()
		}
	}
}

// flateLevel is the chunks' deflate level. Chunks are compressed as a
// session runs, on the gateway's CPU, which a busy database session
// shares with its client and server: BenchmarkRecord spends 40% less time
// at level 2 than at the default (6) for 13% more bytes stored.
const flateLevel = 2

// storeChunk compresses, encrypts and inserts one chunk.
func (r *Recorder) storeChunk(ctx context.Context, id string, seq int64, plain []byte) error {
	var b bytes.Buffer
	b.Grow(len(plain) / 4)
	w, _ := r.flate.Get().(*flate.Writer)
	if w == nil {
		w, _ = flate.NewWriter(&b, flateLevel) // a valid level: no error
	} else {
		w.Reset(&b)
	}
	w.Write(plain) // a bytes.Buffer does not fail
	w.Close()
	r.flate.Put(w)
	ct, err := r.cipher.Encrypt(ctx, chunkAAD(id, seq), b.Bytes())
	if err != nil {
		return fmt.Errorf("recording: encrypt chunk %d of %s: %w", seq, id, err)
	}
	if _, err := r.db.ExecContext(ctx, `INSERT INTO recording_chunks (session_id, seq, data_ct, created_at) VALUES ($1, $2, $3, $4)`,
		id, seq, ct, store.Micros(r.now())); err != nil {
		return fmt.Errorf("recording: store chunk %d of %s: %w", seq, id, err)
	}
	return nil
}

// Close ends the recording: it stores what is buffered, then the end time,
// byte and event counts, status and SHA-256 of the recording, and appends
// the audit event "session.end" (details status, sha256, bytes: the size
// of the recording, bytes_in, bytes_out, events). It cancels the session's
// context and ends its observers.
//
// status is "closed", "killed", "expired" or "error" (anything else counts
// as "error"); the session's own end takes precedence: a session killed,
// expired or whose recording failed is stored as "killed", "expired" or
// "error" whatever status says. Close does not give up when ctx is
// already cancelled (as the session's own context is after a kill): it
// takes ctx's values, not its cancellation, and waits at most 30 seconds
// for the database. When the recording had failed, Close still ends the
// row (status "error", the hash of what was stored) and returns the error
// wrapping ErrRecordingFailed. Calling Close again returns the first
// call's result.
func (s *Session) Close(ctx context.Context, status string) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closeDone {
		return s.closeErr
	}
	s.closeDone = true
	s.closeErr = s.close(ctx, status)
	return s.closeErr
}

func (s *Session) close(ctx context.Context, status string) error {
	s.mu.Lock()
	s.closed = true
	for c := range s.carry { // an incomplete character at the very end
		if len(s.carry[c]) > 0 {
			typ := Output
			if c == 1 {
				typ = Input
			}
			s.appendLocked(s.elapsed(), typ, s.carry[c])
			s.carry[c] = nil
		}
	}
	s.handOffLocked() // buf holds the header until the first hand-off: it is always stored
	for s.writing {
		s.cond.Wait()
	}
	failed := s.failed
	for o := range s.observers {
		s.dropLocked(o)
	}
	if s.deadline != nil {
		s.deadline.Stop()
		s.deadline = nil
	}
	s.mu.Unlock()
	defer s.r.unregister(s)

	var killed KilledError
	switch cause := context.Cause(s.ctx); {
	case failed != nil:
		status = StatusError
	case errors.As(cause, &killed):
		status = StatusKilled
	case errors.Is(cause, ErrExpired):
		status = StatusExpired
	case status == StatusClosed || status == StatusKilled || status == StatusExpired || status == StatusError:
	default:
		status = StatusError
	}
	s.cancel(ErrClosed)

	sum := hex.EncodeToString(s.hash.Sum(nil))
	in, out := s.in.Load(), s.out.Load()
	outcome := audit.OutcomeSuccess
	if status == StatusError {
		outcome = audit.OutcomeFailure
	}
	details := map[string]string{
		"status": status, "sha256": sum, "bytes": strconv.FormatInt(s.stored, 10),
		"bytes_in": strconv.FormatInt(in, 10), "bytes_out": strconv.FormatInt(out, 10),
		"events": strconv.FormatInt(s.events, 10),
	}
	if failed != nil {
		details["error"] = "recording failed"
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	end := store.Micros(s.r.now())
	err := s.r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE recording_sessions SET ended_at = $1, status = $2, bytes_in = $3,
			bytes_out = $4, events = $5, recorded_bytes = $6, sha256 = $7 WHERE id = $8 AND status = 'active'`,
			end, status, in, out, s.events, s.stored, sum, s.id)
		if err != nil {
			return fmt.Errorf("recording: close session %s: %w", s.id, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errkind.New(errkind.Conflict, "recording: session %s was ended elsewhere (recovered as orphaned?)", s.id)
		}
		_, err = s.r.audit.AppendTx(ctx, tx, audit.Origin{Actor: s.meta.Principal, Source: s.meta.Source}.Event(
			"session.end", "session:"+s.id, outcome, details))
		return err
	})
	if err != nil {
		return err
	}
	if failed != nil {
		return failed
	}
	return nil
}
