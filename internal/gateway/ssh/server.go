// Package ssh is Warder's SSH gateway. People log in to it as themselves,
// with an SSH user certificate signed by Warder's user CA (or, as a
// fallback, a Warder token as password); the SSH user name they ask for
// selects the target account, "ACCOUNT@TARGET" or "TARGET" (the account
// the Resolver chooses for the user, if any; otherwise the connection is
// refused, telling the user to name one). The gateway authorizes the
// connection (action "connect" on Account::"TARGET/ACCOUNT", context via
// "ssh"), logs in to the target with what the Resolver provides (the
// vaulted credential, or an ephemeral certificate), which the user never
// sees, and relays the session while recording it.
//
// Per connection: one upstream SSH connection to the target, whose host
// key must be the pinned one or a host certificate of the target's host CA
// (Upstream.HostKey, Upstream.HostCA; a mismatch refuses the connection
// and writes an audit event). Per session channel: one recording, started before the
// shell, command or subsystem runs (no recording, no session). Interactive
// sessions record output, input and window resizes; exec sessions the
// command line, exit status and byte counts; SFTP sessions each file
// operation (open, close with bytes read and written, remove, rename,
// mkdir, rmdir, setstat).
//
// Command rules come with the target (Upstream.Rules): a connection
// applies those in force when it started. They are a guard rail, not a
// sandbox: they match the command line reconstructed from what the user
// types, so a command built by a script, an alias, a here-document or a
// program other than the shell is not seen. A blocked line is not sent:
// the gateway sends Ctrl-E Ctrl-U to clear the remote line editor and
// tells the user why (the rule and its message).
//
// A connection lasts as long as its access (see watchAccess): it ends,
// with a message to the user, when the check-out lease or the just-in-time
// grants that allowed it expire, when a re-check of the connect request
// every Config.RecheckInterval no longer allows it (a grant revoked, a
// policy removed, the principal disabled), and after Config.IdleTimeout
// without data. Recorder kills (`warder session kill`, a disabled user's
// sessions) end it at once.
//
// ProxyJump: with Config.HostCA set, a client logged in under a name
// without "@" (any name: the Warder user name, say) may open a
// direct-tcpip channel to port 22 of "TARGET" or "TARGET"+Config.JumpSuffix
// ("web1.warder"), as `ssh -J gateway root@web1.warder` does. The gateway
// does not dial that host: it serves a nested SSH connection over the
// channel, presenting its host key certified by the host CA for the
// requested name, the target's name and TARGET+JumpSuffix (valid a few
// minutes, signed per connection), and authenticating the user again by
// user certificate, which must name the same principal as the outer
// connection. The nested connection's user name is the account; from
// there on it is an "ACCOUNT@TARGET" connection like any other (its own
// authorization, upstream, recordings, rules, kill, idle timeout). Such an
// outer connection carries ProxyJump channels only: sessions and every
// other forwarding on it are refused. A nested connection ends when its
// channel closes, at the latest with the outer connection.
//
// Port forwarding (direct-tcpip for ssh -L and -W, tcpip-forward for
// ssh -R) is decided per request by the policy engine, action
// "port_forward" on the connection's account, context via "ssh", audited
// with the direction and destination: refused unless a policy permits it.
// Forwarded connections are relayed through the target's sshd (whose own
// AllowTcpForwarding applies too) and are not recorded. Agent and X11
// forwarding are always refused. ProxyJump channels are not port
// forwarding: they never leave the gateway.
package ssh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/gateway"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/sshca"
)

// Session statuses, passed to Recording.Close and Upstream.Release.
const (
	StatusClosed  = "closed"  // ended normally
	StatusKilled  = "killed"  // Recording.Context ended (kill), or access withdrawn
	StatusExpired = "expired" // the lease or grant that allowed it expired
	StatusIdle    = "idle"    // closed by the idle timeout
	StatusFailed  = "failed"  // the upstream or the recording failed
	StatusBlocked = "blocked" // an exec command matched a block rule
)

// Config configures a Server. New does not modify it, and it must not be
// modified afterwards.
type Config struct {
	// Listen is the address ListenAndServe listens on, "host:port".
	// Empty: ":2222".
	Listen string
	// HostSigner is the gateway's host key. Required.
	HostSigner gossh.Signer
	// HostCA certifies HostSigner's key under target names for ProxyJump
	// connections (see the package documentation). Nil: ProxyJump is
	// refused like any other port forwarding.
	HostCA gossh.Signer
	// JumpSuffix is the domain suffix of ProxyJump host names: a channel
	// to "web1"+JumpSuffix, or to "web1", reaches target web1. Empty:
	// ".warder".
	JumpSuffix string
	// UserCA is the CA whose user certificates authenticate people. The
	// principal is the certificate's first valid principal of the form
	// "user:NAME" or "machine:NAME", else its key id of that form. Nil:
	// no certificate authentication (PasswordAuth must be set).
	UserCA gossh.PublicKey
	// PasswordAuth, if set, authenticates a password (a Warder token) for
	// the requested SSH user name. Nil: no password authentication.
	PasswordAuth func(ctx context.Context, user, password string) (identity.Principal, error)
	// Authz authorizes each connection and port forwarding request, and
	// re-checks live connections. Required.
	Authz Authorizer
	// PrincipalActive, if set, reports whether p may still connect (not
	// disabled or deleted), at connect and at each re-check: a
	// certificate outlives a disabled account. Nil: not checked.
	PrincipalActive func(ctx context.Context, p identity.Principal) (bool, error)
	// TokenLive, if set, is asked at connect and at every re-check whether
	// the login token a user certificate is bound to (extension
	// sshca.TokenExt) is still live: an error wrapping identity.ErrBadToken
	// (logout, revocation, expiry) refuses the connection or ends it. With
	// TokenLive set, a certificate bound to no token is refused.
	TokenLive func(ctx context.Context, id string) (identity.Token, error)
	// Upstream resolves targets and credentials. Required.
	Upstream Resolver
	// Recorder records every session. Required: the gateway does not
	// relay unrecorded sessions.
	Recorder Recorder
	// Audit receives the gateway's own events: host key mismatches,
	// command rule matches, sessions ended because their access ended,
	// failed handshakes (rate-limited). Nil: they are only logged.
	Audit Auditor
	// NewLineBuffer returns a line reconstructor for a session's input,
	// for the command rules. Nil: RecordingLineBuffer.
	NewLineBuffer func() LineBuffer
	// IdleTimeout closes a connection on which no data moved for that
	// long. Zero: never.
	IdleTimeout time.Duration
	// RecheckInterval is how often a live connection's access is checked
	// again (gateway.Watch). Zero: gateway.DefaultRecheck (10 seconds).
	RecheckInterval time.Duration
	// HandshakeTimeout bounds the client's SSH handshake including
	// authentication. Zero: 30 seconds.
	HandshakeTimeout time.Duration
	// DialTimeout bounds the upstream dial, handshake and login. Zero: 15
	// seconds.
	DialTimeout time.Duration
	// Logger receives operational logs. Nil: discard.
	Logger *slog.Logger
	// Now is the clock, for certificate validity and idle time. Nil:
	// time.Now.
	Now func() time.Time
}

// Ciphers lists the ciphers offered on both legs, AES-GCM first: it uses
// AES-NI, where x/crypto/ssh's chacha20-poly1305 has no assembly.
var Ciphers = []string{
	gossh.CipherAES128GCM, gossh.CipherAES256GCM, gossh.CipherChaCha20Poly1305,
	gossh.CipherAES128CTR, gossh.CipherAES192CTR, gossh.CipherAES256CTR,
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("ssh: server closed")

// Server is the SSH gateway. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	checker gossh.CertChecker

	wg      sync.WaitGroup // one per connection being served
	hsAudit handshakeAudit // rate of failed-handshake audit events

	// mu protects the following.
	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.HostSigner == nil:
		return nil, errors.New("ssh: Config.HostSigner is required")
	case cfg.UserCA == nil && cfg.PasswordAuth == nil:
		return nil, errors.New("ssh: Config.UserCA or Config.PasswordAuth is required")
	case cfg.Authz == nil:
		return nil, errors.New("ssh: Config.Authz is required")
	case cfg.Upstream == nil:
		return nil, errors.New("ssh: Config.Upstream is required")
	case cfg.Recorder == nil:
		return nil, errors.New("ssh: Config.Recorder is required")
	}
	if cfg.NewLineBuffer == nil {
		cfg.NewLineBuffer = RecordingLineBuffer
	}
	if cfg.IdleTimeout < 0 || cfg.RecheckInterval < 0 {
		return nil, errors.New("ssh: negative Config.IdleTimeout or Config.RecheckInterval")
	}
	if cfg.Listen == "" {
		cfg.Listen = ":2222"
	}
	if cfg.JumpSuffix == "" {
		cfg.JumpSuffix = ".warder"
	}
	if !strings.HasPrefix(cfg.JumpSuffix, ".") || !jumpHostRE.MatchString(cfg.JumpSuffix[1:]) {
		return nil, fmt.Errorf("ssh: Config.JumpSuffix %q is not a domain suffix such as \".warder\"", cfg.JumpSuffix)
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		now:       cfg.Now,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.checker = gossh.CertChecker{
		IsUserAuthority: func(k gossh.PublicKey) bool {
			return cfg.UserCA != nil && keysEqual(k, cfg.UserCA)
		},
		Clock:                    s.now,
		SupportedCriticalOptions: []string{"source-address"},
	}
	return s, nil
}

// ListenAndServe listens on Config.Listen and serves until Close.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ssh: %w", err)
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln until Close, and closes ln. It returns
// ErrServerClosed after Close.
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
	return gateway.Accept(ln, "ssh", s.log, s.isClosed, ErrServerClosed, func(nc net.Conn) bool {
		c := &conn{srv: s, nc: nc, id: newID()}
		if !s.track(c) {
			nc.Close()
			return false
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			c.serve()
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

// track registers c and counts it in wg, unless the server is closed.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops the listeners, ends every connection and waits for their
// goroutines to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.shutdown(StatusClosed, "warder: the gateway is shutting down")
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Conns returns the number of connections being served.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// serverConfig returns the SSH configuration of one client connection.
func (s *Server) serverConfig(c *conn) *gossh.ServerConfig {
	cfg := &gossh.ServerConfig{
		Config:        gossh.Config{Ciphers: Ciphers},
		ServerVersion: "SSH-2.0-Warder",
		MaxAuthTries:  6,
	}
	if c.jump != nil {
		return s.jumpServerConfig(c, cfg)
	}
	cfg.AddHostKey(s.cfg.HostSigner)
	if s.cfg.UserCA != nil {
		cfg.PublicKeyCallback = func(cm gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
			return s.certAuth(key)
		}
	}
	if s.cfg.PasswordAuth != nil {
		cfg.PasswordCallback = func(cm gossh.ConnMetadata, password []byte) (*gossh.Permissions, error) {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
			defer cancel()
			p, err := s.cfg.PasswordAuth(ctx, cm.User(), string(password))
			if err != nil {
				s.log.Info("ssh: password authentication failed", "conn", c.id, "user", cm.User(), "source", cm.RemoteAddr().String(), "err", err)
				return nil, errors.New("ssh: authentication failed")
			}
			return principalPermissions(p, nil), nil
		}
	}
	return cfg
}

// principalExt is the Permissions extension that carries the principal
// from authentication to the connection.
const principalExt = "warder-principal@warder"

// tokenExt carries the login token a certificate is bound to.
const tokenExt = "warder-token@warder"

func principalPermissions(p identity.Principal, critical map[string]string) *gossh.Permissions {
	return &gossh.Permissions{CriticalOptions: critical, Extensions: map[string]string{principalExt: p.Actor()}}
}

// certAuth authenticates a user certificate signed by the user CA. The
// certificate's source-address option is enforced by x/crypto/ssh from the
// returned Permissions.
func (s *Server) certAuth(key gossh.PublicKey) (*gossh.Permissions, error) {
	cert, ok := key.(*gossh.Certificate)
	if !ok {
		return nil, errors.New("ssh: only certificates signed by the Warder user CA are accepted")
	}
	if cert.CertType != gossh.UserCert {
		return nil, errors.New("ssh: not a user certificate")
	}
	if !s.checker.IsUserAuthority(cert.SignatureKey) {
		return nil, errors.New("ssh: certificate signed by an unknown authority")
	}
	p, principal, err := certPrincipal(cert)
	if err != nil {
		return nil, err
	}
	if err := s.checker.CheckCert(principal, cert); err != nil {
		return nil, err
	}
	critical := make(map[string]string, len(cert.CriticalOptions))
	for k, v := range cert.CriticalOptions {
		critical[k] = v
	}
	perms := principalPermissions(p, critical)
	if id := cert.Permissions.Extensions[sshca.TokenExt]; id != "" {
		perms.Extensions[tokenExt] = id
	} else if s.cfg.TokenLive != nil {
		return nil, errors.New("ssh: the certificate is bound to no login token; run warder login again")
	}
	return perms, nil
}

// certPrincipal returns the Warder principal a certificate names, and the
// certificate principal to check it with ("" when it comes from the key
// id of a certificate without principals).
func certPrincipal(cert *gossh.Certificate) (identity.Principal, string, error) {
	for _, vp := range cert.ValidPrincipals {
		if p, ok := parsePrincipal(vp); ok {
			return p, vp, nil
		}
	}
	if len(cert.ValidPrincipals) == 0 {
		if p, ok := parsePrincipal(cert.KeyId); ok {
			return p, "", nil
		}
	}
	return identity.Principal{}, "", errors.New("ssh: the certificate names no Warder principal")
}

// parsePrincipal parses "user:NAME" or "machine:NAME".
func parsePrincipal(s string) (identity.Principal, bool) {
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n:") {
		return identity.Principal{}, false
	}
	switch identity.PrincipalKind(kind) {
	case identity.KindUser, identity.KindMachine:
		return identity.Principal{Kind: identity.PrincipalKind(kind), Name: name}, true
	}
	return identity.Principal{}, false
}

// parseDestination splits the requested SSH user name: "ACCOUNT@TARGET"
// or "TARGET" (account "").
func parseDestination(user string) (target, account string, err error) {
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		account, target = user[:i], user[i+1:]
		if account == "" {
			return "", "", errors.New("empty account name")
		}
	} else {
		target = user
	}
	if target == "" {
		return "", "", errors.New("empty target name")
	}
	if strings.ContainsAny(target+account, "/\x00\r\n") {
		return "", "", errors.New("invalid target or account name")
	}
	return target, account, nil
}

func keysEqual(a, b gossh.PublicKey) bool {
	return string(a.Marshal()) == string(b.Marshal())
}

func newID() string {
	b := make([]byte, 8)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err) // crypto/rand does not fail
	}
	return "ssh-" + hex.EncodeToString(b)
}
