package ssh

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
)

// session relays one "session" channel between the client (ch) and the
// target (uch), recording it.
//
// Goroutines, all joined by handleSession: one reads the client's channel
// requests (and starts the shell, command or subsystem), one the target's;
// once started, two copy the target's stdout and stderr to the client
// (outWG), one the client's input to the target (inWG), and one watches
// the recording's context for a kill.
type session struct {
	c   *conn
	ch  gossh.Channel // the client's side
	uch gossh.Channel // the target's side

	// Set by clientRequests before started is closed; read-only after.
	rec     Recording
	started chan struct{}
	kind    string // "shell", "exec" or "subsystem"
	lb      LineBuffer
	sftp    *sftpTracker
	// Set by clientRequests before the start; read-only after.
	pty           bool
	width, height int

	recordIO bool // record input and output bytes (shell, or exec with a pty)
	in, out  atomic.Int64
	outWG    sync.WaitGroup // stdout and stderr copiers
	inWG     sync.WaitGroup // the input copier
	eofMu    sync.Mutex     // serialises CloseWrite with tell: x/crypto/ssh's CloseWrite is not safe beside a write
	eofSent  bool           // guarded by eofMu
	// startMu is held by start until it has answered the client, so that
	// neither the exit status nor the channel close overtakes the answer.
	startMu sync.Mutex
	failed  atomic.Bool // the recording failed or the start was refused
	blocked atomic.Bool // an exec command was blocked
	pending []byte      // non-pty input held back until its line is complete
}

// maxPending bounds the input held back for command rules without a pty;
// a longer line is sent unchecked.
const maxPending = 64 << 10

func (c *conn) handleSession(ctx context.Context, nch gossh.NewChannel) {
	uch, ureqs, err := c.upConn.OpenChannel("session", nil)
	if err != nil {
		c.srv.log.Info("ssh: target refused a session", "conn", c.id, "target", c.target, "err", err)
		nch.Reject(gossh.ConnectionFailed, "warder: the target refused the session")
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		uch.Close()
		return
	}
	s := &session{c: c, ch: ch, uch: uch, started: make(chan struct{})}
	c.mu.Lock()
	ending := c.ending
	if !ending {
		if c.sessions == nil {
			c.sessions = map[*session]struct{}{}
		}
		c.sessions[s] = struct{}{}
	}
	c.mu.Unlock()
	if ending {
		ch.Close()
		uch.Close()
		return
	}
	defer func() {
		c.mu.Lock()
		delete(c.sessions, s)
		c.mu.Unlock()
	}()

	done := make(chan struct{}) // closed when the relay has ended
	upDone := make(chan struct{})
	clDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { defer close(upDone); s.upstreamRequests(ureqs) })
	wg.Go(func() { defer close(clDone); s.clientRequests(ctx, reqs, done, &wg) })

	select {
	case <-upDone: // the target closed the channel
	case <-clDone: // the client did
		uch.Close()
		<-upDone
	}
	s.outWG.Wait()
	s.waitStart()
	s.sendEOF()
	ch.Close()
	<-clDone
	uch.Close()
	s.inWG.Wait()
	close(done)
	wg.Wait()

	select {
	case <-s.started:
	default:
		return // never started: nothing recorded
	}
	status := StatusClosed
	switch {
	case s.failed.Load():
		status = StatusFailed
	case s.blocked.Load():
		status = StatusBlocked
	}
	c.mu.Lock()
	if c.status != "" {
		status = c.status
	}
	c.mu.Unlock()
	s.rec.AddBytes(s.in.Load(), s.out.Load())
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.rec.Close(cctx, status); err != nil {
		c.srv.log.Error("ssh: close recording", "conn", c.id, "recording", s.rec.ID(), "err", err)
	}
}

func (s *session) isStarted() bool {
	select {
	case <-s.started:
		return true
	default:
		return false
	}
}

// waitStart waits until a start in progress has answered the client.
func (s *session) waitStart() {
	s.startMu.Lock()
	defer s.startMu.Unlock()
}

// sendEOF sends EOF to the client once.
func (s *session) sendEOF() {
	s.eofMu.Lock()
	defer s.eofMu.Unlock()
	if !s.eofSent {
		s.eofSent = true
		s.ch.CloseWrite()
	}
}

// tell writes msg to the client's stderr unless EOF was sent; it may be
// called from any goroutine.
func (s *session) tell(msg string) {
	s.eofMu.Lock()
	defer s.eofMu.Unlock()
	if !s.eofSent {
		s.ch.Stderr().Write([]byte(msg))
	}
}

// record adds an event to the recording; a failed recording ends the
// connection (no unrecorded sessions).
func (s *session) record(typ EventType, data []byte) {
	if err := s.rec.Record(typ, data); err != nil {
		s.failed.Store(true)
		s.c.srv.log.Error("ssh: recording failed", "conn", s.c.id, "recording", s.rec.ID(), "err", err)
		go s.c.shutdown(StatusFailed, "warder: the session recording failed; closing the session")
	}
}

func (s *session) note(v any) {
	b, _ := json.Marshal(v)
	s.record(Note, b)
}

// clientRequests handles the client's channel requests until the channel
// closes. Helpers it starts are added to wg (watchers) or outWG/inWG.
func (s *session) clientRequests(ctx context.Context, reqs <-chan *gossh.Request, done <-chan struct{}, wg *sync.WaitGroup) {
	for r := range reqs {
		switch r.Type {
		case "pty-req":
			var m struct {
				Term          string
				Cols, Rows    uint32
				Width, Height uint32
				Modes         string
			}
			if s.isStarted() || gossh.Unmarshal(r.Payload, &m) != nil {
				r.Reply(false, nil)
				continue
			}
			s.pty, s.width, s.height = true, int(m.Cols), int(m.Rows)
			s.forward(r)
		case "window-change":
			var m struct{ Cols, Rows, Width, Height uint32 }
			if gossh.Unmarshal(r.Payload, &m) == nil && s.isStarted() && s.pty {
				s.record(Resize, fmt.Appendf(nil, "%dx%d", m.Cols, m.Rows))
			}
			s.forward(r)
		case "env":
			var m struct{ Name, Value string }
			if gossh.Unmarshal(r.Payload, &m) != nil || !allowedEnv(m.Name) {
				r.Reply(false, nil)
				continue
			}
			s.forward(r)
		case "shell", "exec", "subsystem":
			s.start(ctx, r, done, wg)
		case "x11-req", "auth-agent-req@openssh.com":
			r.Reply(false, nil)
		default: // signal, break, keepalive@openssh.com, …
			s.forward(r)
		}
	}
}

// forward passes a client request to the target and its answer back.
func (s *session) forward(r *gossh.Request) {
	ok, err := s.uch.SendRequest(r.Type, r.WantReply, r.Payload)
	if r.WantReply {
		r.Reply(ok && err == nil, nil)
	}
}

// allowedEnv reports whether the client may set the environment variable
// name on the target: locale settings only (the target's sshd applies its
// own AcceptEnv too).
func allowedEnv(name string) bool {
	return name == "LANG" || strings.HasPrefix(name, "LC_")
}

// start starts the recording, then the shell, command or subsystem.
func (s *session) start(ctx context.Context, r *gossh.Request, done <-chan struct{}, wg *sync.WaitGroup) {
	c := s.c
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.isStarted() {
		r.Reply(false, nil)
		return
	}
	m := Meta{
		Kind: KindSSH, Principal: c.p.Actor(), Target: c.target, Account: c.account, Source: c.origin.Source,
		PTY: s.pty, Width: s.width, Height: s.height, GrantID: c.up.GrantID, LeaseID: c.up.LeaseID,
	}
	switch r.Type {
	case "exec":
		var p struct{ Command string }
		if gossh.Unmarshal(r.Payload, &p) != nil {
			r.Reply(false, nil)
			return
		}
		m.Command = p.Command
	case "subsystem":
		var p struct{ Name string }
		if gossh.Unmarshal(r.Payload, &p) != nil || p.Name != "sftp" {
			r.Reply(false, nil)
			return
		}
		m.Command = "subsystem:sftp"
	}
	rec, err := c.srv.cfg.Recorder.Start(ctx, c.origin, m)
	if err != nil {
		c.srv.log.Error("ssh: start recording", "conn", c.id, "target", c.target, "err", err)
		r.Reply(false, nil)
		s.tell("warder: session recording is unavailable; the session is refused\r\n")
		return
	}
	s.rec, s.kind = rec, r.Type
	s.recordIO = r.Type == "shell" || (r.Type == "exec" && s.pty)
	if r.Type == "subsystem" {
		s.sftp = newSFTPTracker(s.recordFile)
	}
	if r.Type == "shell" && len(c.rules) > 0 {
		s.lb = c.srv.cfg.NewLineBuffer()
	}
	close(s.started)
	wg.Go(func() {
		select {
		case <-rec.Context().Done():
			msg := rec.KillMessage()
			if msg == "" {
				msg = "the session was terminated"
			}
			s.note(map[string]string{"event": "killed", "message": msg})
			c.shutdown(StatusKilled, "warder: "+msg)
		case <-done:
		}
	})

	if r.Type == "exec" {
		if rule, ok := s.checkCommand(m.Command); ok {
			s.blocked.Store(true)
			r.Reply(true, nil)
			s.tell(blockedMessage(rule) + "\r\n")
			s.ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{126}))
			s.sendEOF()
			s.ch.Close()
			return
		}
	}

	// The copiers start before the target is asked, so that an early
	// exit-status waits for the output (see upstreamRequests).
	s.outWG.Go(func() { s.copyOut(s.ch, s.uch) })
	s.outWG.Go(func() { s.copyOut(s.ch.Stderr(), s.uch.Stderr()) })
	s.inWG.Go(s.copyIn)
	ok, err := s.uch.SendRequest(r.Type, true, r.Payload)
	if err != nil || !ok {
		s.failed.Store(true)
		r.Reply(false, nil)
		s.uch.Close()
		return
	}
	r.Reply(true, nil)
}

// upstreamRequests passes the target's channel requests (exit-status,
// exit-signal, eow@openssh.com, …) to the client until the channel closes.
// The exit status goes after all output and EOF.
func (s *session) upstreamRequests(reqs <-chan *gossh.Request) {
	for r := range reqs {
		switch r.Type {
		case "exit-status", "exit-signal":
			s.outWG.Wait()
			s.waitStart()
			s.sendEOF()
			if s.isStarted() {
				if r.Type == "exit-status" && len(r.Payload) == 4 {
					s.note(map[string]any{"event": "exit", "status": binary.BigEndian.Uint32(r.Payload)})
				} else {
					var sig struct{ Signal string }
					gossh.Unmarshal(r.Payload, &sig)
					s.note(map[string]any{"event": "exit", "signal": sig.Signal})
				}
			}
		}
		ok, err := s.ch.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			r.Reply(ok && err == nil, nil)
		}
	}
}

// copyBuf is the relay's read size: two SSH packets' worth.
const copyBuf = 64 << 10

// copyOut copies the target's output to the client.
func (s *session) copyOut(dst interface{ Write([]byte) (int, error) }, src interface{ Read([]byte) (int, error) }) {
	buf := make([]byte, copyBuf)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			s.c.touch()
			s.out.Add(int64(n))
			switch {
			case s.recordIO:
				s.record(Output, buf[:n])
			case s.sftp != nil:
				s.sftp.fromServer(buf[:n])
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// copyIn copies the client's input to the target, through the command
// rules.
func (s *session) copyIn() {
	buf := make([]byte, copyBuf)
	for {
		n, err := s.ch.Read(buf)
		if n > 0 {
			s.c.touch()
			s.in.Add(int64(n))
			data := buf[:n]
			switch {
			case s.recordIO:
				s.record(Input, data)
			case s.sftp != nil:
				s.sftp.fromClient(data)
			}
			if s.lb != nil {
				data = s.filter(data)
			}
			if len(data) > 0 {
				if _, werr := s.uch.Write(data); werr != nil {
					return
				}
			}
		}
		if err != nil {
			if s.lb != nil && len(s.pending) > 0 {
				s.uch.Write(s.pending) // an unterminated last line: sh ignores it or runs it, as without the gateway
			}
			s.uch.CloseWrite()
			return
		}
	}
}

// filter applies the command rules to input: it returns what to send to
// the target. With a pty, what the user types goes through at once (the
// target echoes it) and a blocked line's terminator is replaced by Ctrl-E
// Ctrl-U, which clears the line in readline and in the terminal's cooked
// mode. Without a pty, lines are held back until complete.
func (s *session) filter(data []byte) []byte {
	var out []byte
	for len(data) > 0 {
		i := strings.IndexAny(string(data), "\r\n")
		seg := data
		if i >= 0 {
			seg = data[:i+1]
		}
		data = data[len(seg):]
		lines := s.lb.Feed(seg)
		block, rule := false, Rule{}
		for _, l := range lines {
			if r, ok := s.checkCommand(l); ok && !block {
				block, rule = true, r
			}
		}
		if !s.pty {
			if !block {
				s.pending = append(s.pending, seg...)
				if i >= 0 || len(s.pending) > maxPending {
					out = append(out, s.pending...)
					s.pending = s.pending[:0]
				}
				continue
			}
			s.pending = s.pending[:0]
			s.tell(blockedMessage(rule) + "\n")
			continue
		}
		if !block {
			out = append(out, seg...)
			continue
		}
		if i >= 0 {
			seg = seg[:len(seg)-1] // the terminator
		}
		out = append(out, seg...)
		out = append(out, 0x05, 0x15) // Ctrl-E Ctrl-U
		msg := []byte("\r\n" + blockedMessage(rule) + "\r\n")
		s.record(Output, msg)
		s.ch.Write(msg)
	}
	return out
}

// checkCommand applies the target's rules to a command line: every match
// is noted, audited and logged; it returns the first blocking rule.
func (s *session) checkCommand(line string) (Rule, bool) {
	c := s.c
	var blockedBy *Rule
	for i := range c.rules {
		r := &c.rules[i]
		if !r.Pattern.MatchString(line) {
			continue
		}
		s.note(map[string]string{"event": "rule", "rule": r.Pattern.String(), "action": string(r.Action), "command": line})
		c.srv.log.Warn("ssh: command rule matched", "conn", c.id, "recording", s.rec.ID(), "principal", c.p.Actor(),
			"target", c.target, "account", c.account, "rule", r.Pattern.String(), "action", r.Action)
		outcome := audit.OutcomeAllow
		if r.Action == ActionBlock {
			outcome = audit.OutcomeDeny
		}
		c.audit(context.Background(), "ssh.command_rule", accountUID(c.target, c.account).String(), outcome, map[string]string{
			"rule": r.Pattern.String(), "rule_action": string(r.Action), "recording": s.rec.ID(), "command": clip(line, 512),
		})
		if r.Action == ActionBlock && blockedBy == nil {
			blockedBy = r
		}
	}
	if blockedBy == nil {
		return Rule{}, false
	}
	return *blockedBy, true
}

func (s *session) recordFile(op sftpOp) {
	b, _ := json.Marshal(op)
	s.record(File, b)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
