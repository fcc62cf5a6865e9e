// Package postgres is Warder's PostgreSQL gateway: it speaks the
// PostgreSQL wire protocol to clients (psql, pgbench, any driver), always
// over TLS, authenticates them with a Warder client certificate or a
// Warder token sent as the password, authorizes the connection, logs in to the real server with a credential
// the client never sees, and relays the session while recording every
// statement and its outcome.
//
// # Connecting
//
// The startup packet's user name selects what to reach:
//
//	TARGET            the target's default account (the Resolver decides:
//	                  a vaulted account or a JIT ephemeral role)
//	ACCOUNT@TARGET    that account of the target (split at the last "@")
//
// The database name passes through; when the client sends none (or, as
// libpq does by default, the user name again) the Resolver's
// Upstream.Database is used.
//
// Of the other startup parameters, only client presentation settings pass
// through (client_encoding, DateStyle, TimeZone, IntervalStyle,
// extra_float_digits, lc_monetary, lc_numeric, lc_time, bytea_output,
// standard_conforming_strings); others (options, role, search_path,
// default_transaction_read_only, …) are dropped and logged, because they
// would change the session without a statement the rules and the
// recording see: the client can SET them instead. replication is refused;
// application_name is set to "warder:<session id>" upstream.
//
// # Authenticating
//
// A client authenticates to Warder, never to the database, in one of two
// ways:
//
//   - With a client certificate: when Config.TLS verifies client
//     certificates (tls.VerifyClientCertIfGiven with Warder's client CA)
//     and the client presents one, Config.CertAuth maps the verified chain
//     to a token, and the gateway asks for no password.
//   - With a token as its password (cleartext password authentication,
//     inside TLS): a database token, scoped to one target and account
//     (identity.DBScope), or an API token. A scoped token used for any
//     other target or account is refused.
//
// The connection is then authorized with the action "connect" on
// Account::"TARGET/ACCOUNT" (or Target::"TARGET" without an account) and
// context.via "db"; the audited decision names the token's id and the
// authentication method.
//
// # Staying authorized
//
// With Config.Checker set, a live session is watched (gateway.Watch): it
// ends at the first of its deadline — the earlier of Upstream.NotAfter
// (the lease or grant) and the decision's NotAfter (the end of the JIT
// grants that allowed it) — and a periodic re-check of the same connect
// request that no longer allows (a grant revoked, a policy removed). The
// client then receives FATAL 57P01 with the reason, as for a kill, and the
// backend's running query is cancelled.
//
// # Relaying
//
// Messages are framed, not decoded, on the hot path: the gateway reads
// what each side sent, looks only at the messages it needs (Query, Parse,
// Bind, Execute, Sync, Close from the client; CommandComplete,
// ErrorResponse, ReadyForQuery, EmptyQueryResponse, PortalSuspended from
// the server), decodes the fields it records, and forwards each read
// batch in one write. CopyData and DataRow are streamed without being
// buffered whole. On Linux, once logged in, a session whose upstream is
// plaintext (loopback or a trusted network) leaves Go's netpoller: its
// sockets join the epoll set of one of a few event-loop goroutines, which
// read and write them without blocking, like PgBouncer (loop_linux.go);
// sessions with upstream TLS, and other systems, use two goroutines per
// session. Both modes share the message handling, so recording, rules,
// COPY, cancel and kill behave the same, and both read a side only once
// the other has taken everything forwarded to it (at most one 64 KiB batch
// buffered per direction). A session whose recording falls behind its
// store stops reading its client until the recording catches up, in a
// loop without holding up the loop's other sessions (NoWaitSession).
//
// Each Query, and each Execute of the extended protocol, is recorded as
// one JSON object: {"sql", "stmt", "params", "tag", "rows", "error_code",
// "duration_ms"} plus "blocked" or "alert" when a rule matched. A named
// prepared statement's text is recorded with its first execution only;
// later executions carry "stmt" (its name) without "sql". Parameters in
// text format are strings, in binary format \x and hex (as bytea is
// printed), NULL null;
// with Config.RedactParams each is "<redacted>".
//
// Rules are the connection's (Upstream.Rules: the target's rules as they
// were when it opened). A statement matching a "block" rule is not sent
// to the server: the client receives ErrorResponse SQLSTATE 42501
// "warder: statement blocked by rule …" (with the rule's message) and
// then ReadyForQuery, in order
// with the responses to what it sent before; in the extended protocol the
// messages up to the next Sync are discarded, as the server does after an
// error. The session goes on. (Unlike a server error, a blocked statement
// does not abort the surrounding transaction block.)
//
// # Secrets
//
// The upstream password is used only for the upstream SCRAM exchange. Error
// details from the upstream login, the Resolver, the Authorizer or the
// token check are logged, never sent: the client sees a generic message
// with a reference it can quote to an operator, or a Resolver's
// PublicError message, written for it.
package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/gateway"
	"github.com/warderhq/warder/internal/identity"
)

// Authenticator checks the token a client sends as its password;
// *identity.Directory implements it.
type Authenticator interface {
	Authenticate(ctx context.Context, presented string) (identity.Token, error)
}

// CertAuthenticator maps a client certificate chain, verified by the TLS
// handshake against Config.TLS.ClientCAs, to the token it stands for. It
// fails when the token is no longer live or its principal no longer
// active.
type CertAuthenticator interface {
	AuthenticateCert(ctx context.Context, chain []*x509.Certificate) (identity.Token, error)
}

// Authorizer decides whether a principal may connect; *authz.Authorizer
// implements it.
type Authorizer interface {
	Authorize(ctx context.Context, o audit.Origin, req authz.Request) (authz.Decision, error)
}

// Resolver finds the server and credential for an authorized connection:
// the server's composition root implements it with the vault (a checkout
// for the connection's duration, checked in by Upstream.Release) or a JIT
// ephemeral role. Account is "" when the client named only the target.
// OriginFrom(ctx) tells whom and where from, for the Resolver's own
// authorization and audit events.
type Resolver interface {
	Resolve(ctx context.Context, p identity.Principal, target, account string, tok identity.Token) (Upstream, error)
}

// originKey is the context key of a connection's audit origin.
type originKey struct{}

// WithOrigin returns ctx carrying o, as the gateway calls a Resolver (and
// as a Resolver's tests may).
func WithOrigin(ctx context.Context, o audit.Origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

// OriginFrom returns the audit origin of the connection a Resolver is
// called for: the principal as actor, the client's address as source and
// the connection's reference as request id.
func OriginFrom(ctx context.Context) (audit.Origin, bool) {
	o, ok := ctx.Value(originKey{}).(audit.Origin)
	return o, ok
}

// PublicError is an error a Resolver returns to tell the client what to do
// (name an account, try again later): the client receives Message, which
// must hold no secret and no internal detail; Err, if any, is only logged.
// The client sees any other Resolver error as a generic message with a
// reference.
type PublicError struct {
	Message string
	Err     error
}

func (e *PublicError) Error() string {
	if e.Err == nil {
		return e.Message
	}
	return e.Message + ": " + e.Err.Error()
}

func (e *PublicError) Unwrap() error { return e.Err }

// Upstream is where and as whom the gateway logs in for one connection.
type Upstream struct {
	Host     string
	Port     int
	User     string
	Password []byte // used for the SCRAM exchange only; the gateway zeroes its copy once logged in
	// Database is used when the client names none. Empty: "postgres".
	Database string
	// TLS, when set, is used to talk to the server (SSLRequest first).
	// Nil: plaintext, for a server on loopback or a trusted network.
	TLS *tls.Config
	// PlaintextFallback, with TLS set, retries in plaintext when the
	// server refuses TLS (libpq's sslmode=prefer). False: TLS or nothing.
	PlaintextFallback bool
	// NotAfter ends the session (Session.SetDeadline): the end of the
	// lease or grant. Zero: no deadline.
	NotAfter time.Time
	// GrantID and LeaseID are copied into the recording's metadata.
	GrantID, LeaseID string
	// Rules are the statement rules of this connection (the target's, as
	// they were when it opened). Nil: none.
	// Each needs a Pattern and an Action; a connection with an invalid
	// rule is refused.
	Rules []Rule
	// Release is called once when the connection ends (or could not be
	// made): it checks the credential back in. Nil: nothing to do.
	Release func()
}

// Recorder starts a session's recording; Recordings adapts a
// *recording.Recorder.
type Recorder interface {
	Start(ctx context.Context, o audit.Origin, m Meta) (Session, error)
}

// Meta describes a recorded database session.
type Meta struct {
	Principal identity.Principal
	Target    string
	Account   string // the upstream user name
	Source    string // the client's IP address
	GrantID   string
	LeaseID   string
}

// Session is one recording, as *recording.Session provides it (Record
// being its Record with recording.Statement).
type Session interface {
	ID() string
	// Record appends one statement (a JSON object); data is not retained
	// after the call.
	Record(data []byte) error
	AddBytes(in, out int64)
	// Context is cancelled when the session is killed or its deadline
	// passes; KillMessage then says why, for the user.
	Context() context.Context
	KillMessage() string
	SetDeadline(t time.Time)
	Close(ctx context.Context, status string) error
}

// NoWaitSession is what a Session provides, besides Record, to be
// recorded into from an event loop (loop_linux.go), which relays many
// sessions and must not wait for one's store; *recording.Session
// provides it through Recordings. The loop checks for it with a type
// assertion: with a Session that lacks it, the loop calls Record, which
// must then never wait long. The goroutine relay always calls Record.
type NoWaitSession interface {
	// RecordNoWait appends one statement as Record does, with the same
	// errors, but never waits: backlogged reports that the store has
	// fallen behind (Record would have waited). The statement is recorded
	// either way; the gateway then stops reading the client until the
	// function given to NotifyDrained is called. data is not retained.
	RecordNoWait(data []byte) (backlogged bool, err error)
	// NotifyDrained arranges for fn to be called exactly once, once the
	// session is no longer backlogged or its recording failed or closed:
	// at once, in the caller's goroutine, if that is already so, else
	// later from another goroutine. fn does not block.
	NotifyDrained(fn func())
}

// Session statuses passed to Session.Close.
const (
	StatusClosed = "closed"
	StatusKilled = "killed"
	StatusError  = "error"
)

// AuditLog receives the events of alert rules; *audit.Log implements it.
type AuditLog interface {
	Append(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Rule actions.
const (
	ActionAlert = "alert" // audit and log the statement, forward it
	ActionBlock = "block" // refuse the statement; the session goes on
)

// Rule applies to the statements of one target whose text matches Pattern.
// The text is matched after comments are removed and runs of white space
// are collapsed to one space; write (?i) for a case-insensitive pattern.
type Rule struct {
	Pattern *regexp.Regexp
	Action  string // ActionAlert or ActionBlock
	// Message is the administrator's explanation of a block rule, added
	// to the error the client receives.
	Message string
}

// checkRule reports what is wrong with r, or nil.
func checkRule(r Rule) error {
	if r.Pattern == nil {
		return errors.New("no pattern")
	}
	if r.Action != ActionAlert && r.Action != ActionBlock {
		return fmt.Errorf("action %q is not %q or %q", r.Action, ActionAlert, ActionBlock)
	}
	return nil
}

// Config configures a Server. New does not modify it; it must not be
// modified afterwards.
type Config struct {
	// Listen is the address ListenAndServe listens on, e.g. ":5433".
	// Empty: ListenAndServe fails; Serve needs none.
	Listen string
	// TLS is the server's TLS configuration: clients must send SSLRequest
	// (or start with TLS directly, sslnegotiation=direct). Required unless
	// AllowPlaintext.
	TLS *tls.Config
	// AllowPlaintext accepts clients without TLS. For tests only: the
	// token travels in clear.
	AllowPlaintext bool
	// Auth checks tokens. Required.
	Auth Authenticator
	// CertAuth authenticates clients that present a certificate TLS
	// verified (TLS.ClientAuth VerifyClientCertIfGiven with the client
	// CA in TLS.ClientCAs). Nil: certificates are ignored, every client
	// sends a token.
	CertAuth CertAuthenticator
	// Authz authorizes connections. Required.
	Authz Authorizer
	// Upstream resolves the server and credential. Required.
	Upstream Resolver
	// Recorder records sessions. Required: no session goes unrecorded.
	Recorder Recorder
	// Checker re-checks live sessions (see the package doc: Staying
	// authorized); *authz.Authorizer implements it. Nil: no re-checks; a
	// session still ends at its deadline.
	Checker gateway.Checker
	// TokenLive, with Checker, is also asked at every re-check whether the
	// token that authenticated the session (its id) is still live and its
	// principal active: an error wrapping identity.ErrBadToken ends the
	// session (logout, revocation, expiry, a disabled user); other errors
	// count as failed re-checks. *identity.Directory's LiveToken
	// implements it. Nil: tokens are checked at connect only.
	TokenLive func(ctx context.Context, id string) (identity.Token, error)
	// Recheck is the interval of those re-checks. Zero:
	// gateway.DefaultRecheck.
	Recheck time.Duration
	// Audit receives alert-rule events. Nil: alerts are only logged and
	// recorded.
	Audit AuditLog
	// RedactParams records "<redacted>" instead of each bound parameter.
	RedactParams bool
	// Logger receives operational logs, never secrets or statement text.
	// Nil: discard.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// HandshakeTimeout bounds TLS, authentication, authorization and the
	// upstream login together. Zero: 30 seconds.
	HandshakeTimeout time.Duration
	// DialTimeout bounds the upstream connection and login. Zero: 10
	// seconds.
	DialTimeout time.Duration
	// MaxMessage bounds a client message the gateway must read whole
	// (Query, Parse, Bind). Zero: 256 MiB.
	MaxMessage int
}

// Server is a PostgreSQL gateway. It is safe for concurrent use.
type Server struct {
	cfg       Config
	refusals  gateway.AuditLimit // rate of "db.auth" deny events
	log       *slog.Logger
	now       func() time.Time
	tls       *tls.Config // cfg.TLS with ALPN "postgresql"; nil when plaintext only
	handshake time.Duration
	dial      time.Duration
	maxMsg    int

	ctx    context.Context // cancelled by Close: sessions end
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per accepted connection
	keys   cancelKeys
	loops  eventLoops // relays sessions (loop_linux.go)

	// mu protects the following.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	closed    bool
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("postgres gateway: server closed")

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.TLS == nil && !cfg.AllowPlaintext:
		return nil, errkind.New(errkind.Invalid, "postgres gateway: TLS is required")
	case cfg.Auth == nil:
		return nil, errkind.New(errkind.Invalid, "postgres gateway: no authenticator")
	case cfg.Authz == nil:
		return nil, errkind.New(errkind.Invalid, "postgres gateway: no authorizer")
	case cfg.Upstream == nil:
		return nil, errkind.New(errkind.Invalid, "postgres gateway: no upstream resolver")
	case cfg.Recorder == nil:
		return nil, errkind.New(errkind.Invalid, "postgres gateway: no recorder")
	case cfg.HandshakeTimeout < 0 || cfg.DialTimeout < 0 || cfg.MaxMessage < 0 || cfg.Recheck < 0:
		return nil, errkind.New(errkind.Invalid, "postgres gateway: negative timeout or size")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, handshake: cfg.HandshakeTimeout,
		dial: cfg.DialTimeout, maxMsg: cfg.MaxMessage, listeners: map[net.Listener]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.handshake == 0 {
		s.handshake = 30 * time.Second
	}
	if s.dial == 0 {
		s.dial = 10 * time.Second
	}
	if s.maxMsg == 0 {
		s.maxMsg = 256 << 20
	}
	if cfg.TLS != nil {
		s.tls = cfg.TLS.Clone()
		s.tls.NextProtos = []string{"postgresql"}
	}
	s.keys.m = map[cancelKey]cancelTarget{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// ListenAndServe listens on Config.Listen and serves until Close.
func (s *Server) ListenAndServe() error {
	if s.cfg.Listen == "" {
		return errkind.New(errkind.Invalid, "postgres gateway: no listen address")
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("postgres gateway: %w", err)
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln until Close, serving each in its own
// goroutine. It closes ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	return gateway.Accept(ln, "postgres gateway", s.log, s.isClosed, ErrServerClosed, func(c net.Conn) bool {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
		return true
	})
}

// isClosed reports whether Close was called.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the listeners, ends every session (the clients receive
// FATAL 57P01) and waits until their goroutines have returned or ctx is
// done.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres gateway: close: %w", ctx.Err())
	}
}
