package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/warderhq/warder/internal/audit"
)

// Buffer sizes: a TLS record holds at most 16 KiB of data.
const (
	readBuf  = 16 << 10
	flushOut = 64 << 10 // forward what is pending once it reaches this size
)

// errTerminated is fromClient's result after the client's Terminate.
var errTerminated = errors.New("client terminated the session")

// errRecording is wrapped by fromServer's result when a statement could
// not be recorded: the session ends, as it may not go on unrecorded.
var errRecording = errors.New("cannot record statement")

// An expect is a response the server owes: fromClient queues one per
// Query, Execute, FunctionCall and Sync it forwards (or replaces by a
// Sync); fromServer completes it from the server's replies, in order.
type expect struct {
	kind   byte      // 'Q' simple query or function call, 'E' Execute, 'S' Sync
	rec    []byte    // the record so far: `{"sql":…` without the outcome; nil: nothing to record
	start  time.Time // when the message was forwarded
	tags   []byte    // 'Q': the command tags so far, "; "-separated
	rows   int64
	code   string // SQLSTATE of the first error
	inject []byte // an ErrorResponse fromServer sends just before the ReadyForQuery
	srvErr bool   // 'S': the server reported an error in this Sync's group
}

// A portal is a Bind's result, as fromClient tracks it.
type portal struct {
	stmt   string
	params []byte // JSON array
}

// A relay carries one session. On Linux, run hands it to an event loop
// (loop_linux.go) when it can; otherwise fromClient and fromServer run in
// their own goroutines, joined by run through one channel. Both ways use
// the same message handling (clientBatch, serverBatch).
type relay struct {
	s      *Server
	client net.Conn
	up     net.Conn
	l      *login
	log    *slog.Logger
	rules  []Rule
	redact bool
	now    func() time.Time

	// mu protects the following: fromClient appends to the queue and
	// fromServer removes from it; free holds spent entries for reuse.
	mu    sync.Mutex
	queue []*expect // queue[head:] are pending
	head  int
	free  []*expect

	// Owned by fromClient.
	discard  *expect           // after a blocked Parse: messages are dropped until Sync, which completes it
	stmts    map[string]string // prepared statement name → text
	recorded map[string]bool   // named statements whose text is in the recording
	unnamed  portal
	portals  map[string]*portal
	norm     []byte // scratch for rule matching

	// Owned by fromServer until it returns; then read by run.
	srvClean bool // fromServer stopped between messages, so a FATAL may follow
	rowsSeen int64

	// Set when the relay runs in an event loop (loop_linux.go), which must
	// not wait for a durable write: apply then queues rule-match events in
	// auditQ (owned by the loop), which the loop hands to one goroutine
	// per batch (auditing while it runs, auditWG until it has returned).
	// What the batch forwards waits until its events are appended, as it
	// does in fromClient; wake asks the loop to go on.
	async    bool
	auditQ   []audit.Event
	auditing atomic.Bool
	auditWG  sync.WaitGroup
	wake     func()
	// noWait, set by the loop when the Session provides it, records
	// without waiting for the store; a statement recorded while the store
	// is behind sets backlogged (owned by the loop), on which the loop
	// stops reading the client.
	noWait     NoWaitSession
	backlogged bool
}

func newRelay(s *Server, client net.Conn, l *login, log *slog.Logger) *relay {
	return &relay{s: s, client: client, up: l.upstream.Conn, l: l, log: log,
		rules: l.up.Rules, redact: s.cfg.RedactParams, now: s.now,
		stmts: map[string]string{}, recorded: map[string]bool{}, portals: map[string]*portal{}}
}

type result struct {
	fromServer bool
	err        error
}

// run sends welcome to the client, relays until either side ends or the
// session is killed, and returns the session's status for the recording.
func (r *relay) run(welcome []byte) string {
	if _, err := r.client.Write(welcome); err != nil {
		return StatusError
	}
	if status, ok := r.runLoop(); ok {
		return status
	}
	errc := make(chan result, 2)
	go func() { errc <- result{false, r.fromClient()} }()
	go func() { errc <- result{true, r.fromServer()} }()

	var first result
	killMsg := ""
	select {
	case first = <-errc:
	case <-r.l.sess.Context().Done():
		killMsg = r.l.sess.KillMessage()
		if killMsg == "" {
			killMsg = "the session was terminated by an administrator"
		}
	case <-r.s.ctx.Done():
		killMsg = "the gateway is shutting down"
	}
	if killMsg == "" {
		var ce *clientError
		if !first.fromServer && errors.As(first.err, &ce) {
			// The client broke the protocol: stop fromServer, then say why.
			r.up.Close()
			r.client.SetWriteDeadline(time.Now().Add(2 * time.Second))
			<-errc
			if r.srvClean {
				r.client.Write(fatal(nil, ce.code, ce.msg))
			}
			r.client.Close()
			r.log.Info("postgres gateway: relay ended", "err", first.err)
			return StatusError
		}
		r.client.Close()
		r.up.Close()
		<-errc
		if err := first.err; err != nil && !errors.Is(err, errTerminated) && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			r.log.Info("postgres gateway: relay ended", "from_server", first.fromServer, "err", err)
		}
		if errors.Is(first.err, errRecording) {
			return StatusError
		}
		return StatusClosed
	}

	// Killed: stop fromServer first, so that nothing the server sends from
	// now on (the cancelled query's error) reaches the client; cancel the
	// running query; tell the client why and close it.
	r.log.Info("postgres gateway: session killed", "reason", killMsg)
	busy := r.pending()
	r.up.Close()
	r.client.SetWriteDeadline(time.Now().Add(2 * time.Second))
	res := <-errc
	if busy {
		if t, ok := r.s.keys.lookup(r.l.clientKey.pid, r.l.clientKey.secret[:]); ok {
			r.s.cancelUpstream(t)
		}
	}
	if res.fromServer && r.srvClean {
		r.client.Write(fatal(nil, codeAdminShutdown, "warder: "+killMsg))
	}
	r.client.Close()
	<-errc
	return StatusKilled
}

// pending reports whether the server owes responses.
func (r *relay) pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.head < len(r.queue)
}

// get returns a blank entry.
func (r *relay) get(kind byte) *expect {
	r.mu.Lock()
	var e *expect
	if n := len(r.free); n > 0 {
		e = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		e = &expect{}
	}
	r.mu.Unlock()
	*e = expect{kind: kind, rec: e.rec[:0], tags: e.tags[:0]}
	return e
}

// push queues e; fromServer may complete it from then on.
func (r *relay) push(e *expect) {
	r.mu.Lock()
	if r.head > 0 && r.head == len(r.queue) {
		r.queue, r.head = r.queue[:0], 0
	}
	r.queue = append(r.queue, e)
	r.mu.Unlock()
}

// peek returns the oldest pending entry, or nil.
func (r *relay) peek() *expect {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head < len(r.queue) {
		return r.queue[r.head]
	}
	return nil
}

// pop removes the oldest pending entry and recycles it.
func (r *relay) pop() {
	r.mu.Lock()
	e := r.queue[r.head]
	r.queue[r.head] = nil
	r.head++
	if cap(e.rec) <= 4096 {
		r.free = append(r.free, e)
	}
	r.mu.Unlock()
}

// wantWholeFromClient: every client message but CopyData.
func wantWholeFromClient(t byte) bool { return t != 'd' }

// fromClient relays the client's messages to the server, recording
// statements and applying the rules.
func (r *relay) fromClient() error {
	f := newFramer(r.client, readBuf, r.s.maxMsg)
	var out []byte
	for {
		if err := f.fill(); err != nil {
			return err
		}
		for {
			var full, end bool
			var err error
			out, full, end, err = r.clientBatch(f, out[:0])
			if err != nil {
				return err
			}
			if end {
				_, err := r.up.Write(out)
				r.l.sess.AddBytes(int64(len(out)), 0)
				if err != nil {
					return err
				}
				return errTerminated
			}
			if len(out) > 0 {
				if err := r.writeUp(out); err != nil {
					return err
				}
			}
			if !full {
				break
			}
		}
	}
}

// clientBatch handles the client's messages that f holds, appending what
// to forward to out, until f needs more bytes or out reaches flushOut
// (full). end is true after Terminate. On error, out is to be dropped.
func (r *relay) clientBatch(f *framer, out []byte) (_ []byte, full, end bool, err error) {
	for len(out) < flushOut {
		p, ok, err := f.next(wantWholeFromClient)
		if err != nil {
			msg := "warder: invalid message"
			code := codeProtocolViolation
			if errors.Is(err, errTooLarge) {
				msg, code = "warder: message too large", codeProgramLimitExceeded
			}
			return out, false, false, refuse(code, msg, err)
		}
		if !ok {
			return out, false, false, nil
		}
		if !p.whole {
			out = append(out, p.data...)
			continue
		}
		out, end, err = r.clientMessage(out, p.typ, p.data)
		if err != nil || end {
			return out, false, end, err
		}
	}
	return out, true, false, nil
}

func (r *relay) writeUp(b []byte) error {
	_, err := r.up.Write(b)
	r.l.sess.AddBytes(int64(len(b)), 0)
	return err
}

// syncMsg is a Sync message, sent in place of a blocked Query so that the
// server's ReadyForQuery comes back in order.
var syncMsg = []byte{'S', 0, 0, 0, 4}

// clientMessage handles one whole message m from the client, appending
// what to forward to out. end is true after Terminate.
func (r *relay) clientMessage(out []byte, typ byte, m []byte) (_ []byte, end bool, err error) {
	body := m[5:]
	if r.discard != nil && typ != 'S' && typ != 'd' && typ != 'c' && typ != 'f' && typ != 'X' {
		return out, false, nil // after a blocked statement, until Sync
	}
	switch typ {
	case 'Q':
		sql, _, ok := cstring(body)
		if !ok {
			return out, false, refuse(codeProtocolViolation, "warder: invalid Query message", nil)
		}
		e := r.get('Q')
		e.rec = appendStart(e.rec, sql, "")
		if rule := r.match(sql); rule != nil {
			if r.apply(rule, e) {
				r.push(e)
				return append(out, syncMsg...), false, nil
			}
		}
		e.start = r.now()
		r.push(e)
	case 'P':
		name, rest, ok := cstring(body)
		sql, _, ok2 := cstring(rest)
		if !ok || !ok2 {
			return out, false, refuse(codeProtocolViolation, "warder: invalid Parse message", nil)
		}
		if rule := r.match(sql); rule != nil {
			e := r.get('S')
			e.rec = appendStart(e.rec, sql, string(name))
			e.rec = append(e.rec, `,"params":[]`...)
			if r.apply(rule, e) {
				r.discard = e
				return out, false, nil
			}
			r.mu.Lock()
			r.free = append(r.free, e)
			r.mu.Unlock()
		}
		r.stmts[string(name)] = string(sql)
		delete(r.recorded, string(name))
	case 'B':
		pname, rest, ok := cstring(body)
		sname, rest, ok2 := cstring(rest)
		if !ok || !ok2 {
			return out, false, refuse(codeProtocolViolation, "warder: invalid Bind message", nil)
		}
		pt := &r.unnamed
		if len(pname) > 0 {
			pt = r.portals[string(pname)]
			if pt == nil {
				pt = &portal{}
				r.portals[string(pname)] = pt
			}
		}
		if string(sname) != pt.stmt {
			pt.stmt = string(sname)
		}
		pt.params, ok = appendParams(pt.params[:0], rest, r.redact)
		if !ok {
			return out, false, refuse(codeProtocolViolation, "warder: invalid Bind message", nil)
		}
	case 'E':
		pname, _, ok := cstring(body)
		if !ok {
			return out, false, refuse(codeProtocolViolation, "warder: invalid Execute message", nil)
		}
		pt := &r.unnamed
		if len(pname) > 0 {
			if pt = r.portals[string(pname)]; pt == nil {
				pt = &portal{}
			}
		}
		e := r.get('E')
		sql, known := r.stmts[pt.stmt]
		switch {
		case pt.stmt == "":
			e.rec = appendStart(e.rec, []byte(sql), "")
		case known && r.recorded[pt.stmt]:
			e.rec = append(e.rec, `{"stmt":`...)
			e.rec = appendJSONString(e.rec, pt.stmt)
		default:
			e.rec = appendStart(e.rec, []byte(sql), pt.stmt)
			r.recorded[pt.stmt] = known
		}
		e.rec = append(e.rec, `,"params":`...)
		if len(pt.params) == 0 {
			e.rec = append(e.rec, "[]"...)
		} else {
			e.rec = append(e.rec, pt.params...)
		}
		e.start = r.now()
		r.push(e)
	case 'S':
		if e := r.discard; e != nil {
			r.discard = nil
			r.push(e)
		} else {
			r.push(r.get('S'))
		}
	case 'C':
		if len(body) > 1 {
			name, _, ok := cstring(body[1:])
			if ok && body[0] == 'S' {
				delete(r.stmts, string(name))
				delete(r.recorded, string(name))
			} else if ok && body[0] == 'P' && len(name) > 0 {
				delete(r.portals, string(name))
			}
		}
	case 'F':
		e := r.get('Q')
		e.rec = append(e.rec, `{"sql":"(function call)","params":[]`...)
		e.start = r.now()
		r.push(e)
	case 'X':
		return append(out, m...), true, nil
	}
	return append(out, m...), false, nil
}

// match returns the first rule whose pattern matches sql, or nil.
func (r *relay) match(sql []byte) *Rule {
	if len(r.rules) == 0 {
		return nil
	}
	r.norm = normalizeSQL(r.norm[:0], sql)
	for i := range r.rules {
		if r.rules[i].Pattern.Match(r.norm) {
			return &r.rules[i]
		}
	}
	return nil
}

// apply acts on a matching rule for e's statement: it reports whether the
// statement is blocked, in which case e is completed with the error the
// client will receive.
func (r *relay) apply(rule *Rule, e *expect) (blocked bool) {
	blocked = rule.Action == ActionBlock
	action, outcome := "db.alert", audit.OutcomeAllow
	if blocked {
		action, outcome = "db.block", audit.OutcomeDeny
		e.rec = append(e.rec, `,"blocked":`...)
		e.code = codeInsufficientPriv
		e.inject, _ = (&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR",
			Code: codeInsufficientPriv, Message: blockMessage(rule)}).Encode(nil)
		e.start = r.now()
	} else {
		e.rec = append(e.rec, `,"alert":`...)
	}
	e.rec = appendJSONString(e.rec, rule.Pattern.String())
	r.log.Warn("postgres gateway: statement matched a rule", "action", rule.Action, "rule", rule.Pattern.String())
	if r.s.cfg.Audit != nil {
		ev := r.l.origin.Event(action, r.l.resource, outcome,
			map[string]string{"session": r.l.sess.ID(), "rule": rule.Pattern.String()})
		if r.async {
			r.auditQ = append(r.auditQ, ev)
		} else {
			r.audit(ev)
		}
	}
	return blocked
}

// audit appends ev to the audit log.
func (r *relay) audit(ev audit.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.s.cfg.Audit.Append(ctx, ev); err != nil {
		r.log.Error("postgres gateway: audit rule match", "err", err)
	}
}

// wantWholeFromServer: the messages that complete statements.
func wantWholeFromServer(t byte) bool {
	switch t {
	case 'C', 'E', 'Z', 'I', 's':
		return true
	}
	return false
}

// fromServer relays the server's messages to the client, completing the
// statements fromClient queued.
func (r *relay) fromServer() error {
	f := newFramer(r.up, readBuf, 1<<30)
	var out []byte
	defer func() { r.srvClean = f.atBoundary() && len(out) == 0 }()
	for {
		if err := f.fill(); err != nil {
			return err
		}
		for {
			var full bool
			var err error
			out, full, err = r.serverBatch(f, out[:0])
			if err != nil {
				return err
			}
			if len(out) > 0 {
				if err := r.writeClient(out); err != nil {
					return err
				}
				out = out[:0]
			}
			if !full {
				break
			}
		}
	}
}

// serverBatch handles the server's messages that f holds, appending what
// to forward to out, until f needs more bytes or out reaches flushOut
// (full). On error, out is to be dropped.
func (r *relay) serverBatch(f *framer, out []byte) (_ []byte, full bool, err error) {
	for len(out) < flushOut {
		p, ok, err := f.next(wantWholeFromServer)
		if err != nil {
			return out, false, fmt.Errorf("from server: %w", err)
		}
		if !ok {
			return out, false, nil
		}
		if p.start && p.typ == 'D' {
			r.rowsSeen++
		}
		if p.whole {
			if out, err = r.serverMessage(out, p.typ, p.data); err != nil {
				return out, false, err
			}
		} else {
			out = append(out, p.data...)
		}
	}
	return out, true, nil
}

func (r *relay) writeClient(b []byte) error {
	_, err := r.client.Write(b)
	r.l.sess.AddBytes(0, int64(len(b)))
	return err
}

// serverMessage handles one whole message m from the server, appending
// what to forward to out.
func (r *relay) serverMessage(out []byte, typ byte, m []byte) ([]byte, error) {
	body := m[5:]
	e := r.peek()
	switch typ {
	case 'C': // CommandComplete
		tag, _, _ := cstring(body)
		switch {
		case e == nil:
		case e.kind == 'E':
			e.tags = append(e.tags, tag...)
			e.rows = tagRows(tag)
			if err := r.complete(e); err != nil {
				return out, err
			}
		case e.kind == 'Q':
			if len(e.tags) > 0 {
				e.tags = append(e.tags, "; "...)
			}
			e.tags = append(e.tags, tag...)
			e.rows += tagRows(tag)
		}
	case 'I', 's': // EmptyQueryResponse, PortalSuspended
		if e != nil && e.kind == 'E' {
			if typ == 's' {
				e.rows = r.rowsSeen
			}
			if err := r.complete(e); err != nil {
				return out, err
			}
		}
	case 'E': // ErrorResponse
		if e == nil {
			break
		}
		code := errorCode(body)
		if e.code == "" {
			e.code = code
		}
		if e.kind == 'E' {
			if err := r.complete(e); err != nil {
				return out, err
			}
			// The server skips the rest of the group until Sync.
			for e = r.peek(); e != nil && e.kind == 'E'; e = r.peek() {
				r.pop()
			}
		}
		if e != nil && e.kind == 'S' {
			e.srvErr = true
		}
	case 'Z': // ReadyForQuery
		for e != nil && e.kind == 'E' { // not completed: should not happen
			r.pop()
			e = r.peek()
		}
		if e == nil {
			break
		}
		if e.inject != nil && !e.srvErr {
			out = append(out, e.inject...)
		}
		if err := r.complete(e); err != nil {
			return out, err
		}
	}
	return append(out, m...), nil
}

// complete records e's statement, if any, and removes it from the queue.
func (r *relay) complete(e *expect) error {
	var err error
	if len(e.rec) > 0 {
		e.rec = append(e.rec, `,"tag":`...)
		e.rec = appendJSONBytes(e.rec, e.tags)
		e.rec = append(e.rec, `,"rows":`...)
		e.rec = strconv.AppendInt(e.rec, e.rows, 10)
		e.rec = append(e.rec, `,"error_code":`...)
		e.rec = appendJSONString(e.rec, e.code)
		e.rec = append(e.rec, `,"duration_ms":`...)
		d := time.Duration(0)
		if !e.start.IsZero() {
			d = r.now().Sub(e.start)
		}
		e.rec = appendMillis(e.rec, d)
		e.rec = append(e.rec, '}')
		err = r.record(e.rec)
	}
	r.rowsSeen = 0
	r.pop()
	if err != nil {
		return fmt.Errorf("%w: %w", errRecording, err)
	}
	return nil
}

// record records one statement: without waiting when noWait is set (a
// backlog sets backlogged), else with Session.Record.
func (r *relay) record(rec []byte) error {
	if r.noWait == nil {
		return r.l.sess.Record(rec)
	}
	backlogged, err := r.noWait.RecordNoWait(rec)
	if backlogged {
		r.backlogged = true
	}
	return err
}

// errorCode returns the SQLSTATE field of an ErrorResponse body.
func errorCode(b []byte) string {
	for len(b) > 0 && b[0] != 0 {
		field := b[0]
		v, rest, ok := cstring(b[1:])
		if !ok {
			return ""
		}
		if field == 'C' {
			return string(v)
		}
		b = rest
	}
	return ""
}

// tagRows returns the row count at the end of a command tag ("INSERT 0 5",
// "SELECT 3", "COPY 10"), or 0.
func tagRows(tag []byte) int64 {
	i := len(tag)
	for i > 0 && tag[i-1] >= '0' && tag[i-1] <= '9' {
		i--
	}
	if i == len(tag) || (i > 0 && tag[i-1] != ' ') {
		return 0
	}
	n, _ := strconv.ParseInt(string(tag[i:]), 10, 64)
	return n
}

// blockMessage is what the client is told about a blocked statement: the
// rule's pattern and the administrator's message, if any.
func blockMessage(rule *Rule) string {
	msg := fmt.Sprintf("warder: statement blocked by rule %q", rule.Pattern.String())
	if rule.Message != "" {
		msg += ": " + rule.Message
	}
	return msg
}
