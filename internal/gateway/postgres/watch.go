package postgres

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/gateway"
	"github.com/warderhq/warder/internal/identity"
)

// watch keeps l's live session within its access (gateway.Watch: the
// deadline, periodic re-checks of the connect request) when a Checker is
// configured. The relay ends a session whose Context is done, as for a
// kill, telling the client KillMessage; so watch replaces l.sess by a
// watched session whose Context is also cancelled when the watch ends the
// session. It returns a function that stops the watch and waits for its
// goroutine; call it once, when the relay has returned.
func (s *Server) watch(l *login, log *slog.Logger) (stop func()) {
	if s.cfg.Checker == nil {
		return func() {}
	}
	w := newWatched(l.sess, s.now)
	l.sess = w
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{}) // closed when Watch has returned
	go func() {
		defer close(done)
		var c gateway.Checker = s.cfg.Checker
		if s.cfg.TokenLive != nil {
			c = tokenChecker{Checker: c, live: s.cfg.TokenLive, id: l.tok.ID}
		}
		gateway.Watch(ctx, c, l.req, l.deadline, s.cfg.Recheck, log, w.end)
	}()
	return func() {
		cancel()
		<-done
		w.cancel() // releases the derived context
	}
}

// tokenChecker denies once the session's token is no longer live, then
// asks the policy.
type tokenChecker struct {
	gateway.Checker
	live func(ctx context.Context, id string) (identity.Token, error)
	id   string
}

func (c tokenChecker) Check(ctx context.Context, req authz.Request) (authz.Decision, error) {
	if _, err := c.live(ctx, c.id); errors.Is(err, identity.ErrBadToken) {
		return authz.Decision{Decision: "deny"}, nil
	} else if err != nil {
		return authz.Decision{}, err
	}
	return c.Checker.Check(ctx, req)
}

// watched is a Session that a watch can end.
type watched struct {
	Session
	ctx    context.Context // the Session's context, also cancelled by end
	cancel context.CancelFunc
	now    func() time.Time

	// mu protects msg.
	mu  sync.Mutex
	msg string // why end ended the session; "" until then
}

func newWatched(s Session, now func() time.Time) *watched {
	ctx, cancel := context.WithCancel(s.Context())
	return &watched{Session: s, ctx: ctx, cancel: cancel, now: now}
}

// noWaitOf returns s as a NoWaitSession, looking through a watch, or nil
// when it records only by waiting.
func noWaitOf(s Session) NoWaitSession {
	if w, ok := s.(*watched); ok {
		s = w.Session
	}
	nw, _ := s.(NoWaitSession)
	return nw
}

// Context is cancelled when the session is killed, its recording's
// deadline passes or the watch ends it.
func (w *watched) Context() context.Context { return w.ctx }

// KillMessage is the watch's reason, else the Session's.
func (w *watched) KillMessage() string {
	w.mu.Lock()
	msg := w.msg
	w.mu.Unlock()
	if msg != "" {
		return msg
	}
	return w.Session.KillMessage()
}

// end ends the session with msg (one of gateway's Msg messages). An
// expiry also ends the recording's deadline, so that it is stored as
// expired rather than killed.
func (w *watched) end(msg string) {
	w.mu.Lock()
	if w.msg == "" {
		w.msg = msg
	}
	w.mu.Unlock()
	if msg == gateway.MsgExpired {
		w.Session.SetDeadline(w.now())
	}
	w.cancel()
}
