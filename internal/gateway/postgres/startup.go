package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/identity"
)

// Startup-phase request codes (the first four bytes after the length).
const (
	codeSSLRequest    = 80877103
	codeGSSEncRequest = 80877104
	codeCancelRequest = 80877102
	maxStartupLen     = 10000 // as the server's MAX_STARTUP_PACKET_LENGTH
	tlsRecordType     = 0x16  // first byte of a TLS handshake (direct SSL negotiation)
)

// SQLSTATEs the gateway reports.
const (
	codeInvalidAuthorization = "28000"
	codeInvalidPassword      = "28P01"
	codeConnectionFailure    = "08006"
	codeProtocolViolation    = "08P01"
	codeInsufficientPriv     = "42501"
	codeAdminShutdown        = "57P01"
	codeProgramLimitExceeded = "54000"
	codeInternalError        = "XX000"
)

// startupParams that are not passed upstream.
var droppedParams = map[string]bool{"user": true, "database": true, "options": true, "application_name": true}

// passedParams are the startup parameters passed to the server: client
// presentation settings that drivers send. Any other (role, search_path,
// session_replication_role, default_transaction_read_only, …) would change
// the session without a statement the rules and the recording could see,
// so it is dropped (and logged); the client can SET it, recorded.
var passedParams = map[string]bool{
	"client_encoding": true, "datestyle": true, "timezone": true, "intervalstyle": true,
	"extra_float_digits": true, "lc_monetary": true, "lc_numeric": true, "lc_time": true,
	"bytea_output": true, "standard_conforming_strings": true,
}

// clientError is an error whose Message is meant for the client; the
// error it wraps is for the log.
type clientError struct {
	code, msg string
	err       error
}

func (e *clientError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}
func (e *clientError) Unwrap() error { return e.err }

func refuse(code, msg string, err error) error { return &clientError{code: code, msg: msg, err: err} }

// newID returns n random bytes in hex.
func newID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fatal encodes a FATAL ErrorResponse.
func fatal(dst []byte, code, msg string) []byte {
	dst, _ = (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}).Encode(dst)
	return dst
}

// readPacketBody reads the body of a packet whose length is in buf[:4].
func readPacketBody(r io.Reader, buf []byte) ([]byte, error) {
	n := int(binary.BigEndian.Uint32(buf[:4]))
	if n < 8 || n > maxStartupLen {
		return nil, fmt.Errorf("startup packet length %d out of range", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return nil, err
	}
	return buf[4:], nil
}

// readTyped reads one typed message (type, length, body) whose body is at
// most limit bytes.
func readTyped(r io.Reader, limit int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n-4 > limit {
		return 0, nil, fmt.Errorf("message %q length %d out of range", hdr[0], n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

// prefixConn is a net.Conn whose first reads return prefix.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// negotiate reads the client's first packets until its StartupMessage,
// switching to TLS on SSLRequest (or a direct TLS handshake). It returns
// nil, nil, nil after serving a CancelRequest.
func (s *Server) negotiate(ctx context.Context, raw net.Conn) (net.Conn, *pgproto3.StartupMessage, error) {
	var c net.Conn = raw
	isTLS := false
	buf := make([]byte, 512)
	for range 3 { // SSLRequest, GSSENCRequest, StartupMessage at most
		if _, err := io.ReadFull(c, buf[:4]); err != nil {
			return nil, nil, err
		}
		if buf[0] == tlsRecordType && !isTLS && s.tls != nil {
			// sslnegotiation=direct: the client starts with a TLS
			// ClientHello; ALPN "postgresql" is required (by crypto/tls,
			// since NextProtos is set and the client offers it).
			tc := tls.Server(&prefixConn{Conn: raw, prefix: append([]byte(nil), buf[:4]...)}, s.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, nil, fmt.Errorf("TLS handshake: %w", err)
			}
			if tc.ConnectionState().NegotiatedProtocol != "postgresql" {
				return nil, nil, errors.New("direct TLS without ALPN postgresql")
			}
			c, isTLS = tc, true
			continue
		}
		body, err := readPacketBody(c, buf)
		if err != nil {
			return nil, nil, err
		}
		switch code := binary.BigEndian.Uint32(body); code {
		case codeSSLRequest:
			if isTLS || s.tls == nil {
				if _, err := c.Write([]byte{'N'}); err != nil {
					return nil, nil, err
				}
				continue
			}
			if _, err := c.Write([]byte{'S'}); err != nil {
				return nil, nil, err
			}
			tc := tls.Server(raw, s.tls) // nothing may follow the SSLRequest in clear: we read none
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, nil, fmt.Errorf("TLS handshake: %w", err)
			}
			c, isTLS = tc, true
		case codeGSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
		case codeCancelRequest:
			var cr pgproto3.CancelRequest
			if err := cr.Decode(body); err != nil {
				return nil, nil, err
			}
			s.cancelFromClient(&cr)
			return nil, nil, nil
		case pgproto3.ProtocolVersion30, pgproto3.ProtocolVersion32:
			var sm pgproto3.StartupMessage
			if err := sm.Decode(body); err != nil {
				return nil, nil, refuse(codeProtocolViolation, "warder: invalid startup packet", err)
			}
			if !isTLS && !s.cfg.AllowPlaintext {
				return c, nil, refuse(codeInvalidAuthorization, "warder: TLS is required: connect with sslmode=require (or stronger)", nil)
			}
			return c, &sm, nil
		default:
			return c, nil, refuse(codeProtocolViolation, "warder: unsupported frontend protocol "+strconv.Itoa(int(code>>16))+"."+strconv.Itoa(int(code&0xffff)), nil)
		}
	}
	return nil, nil, errors.New("too many startup requests")
}

// login holds what the startup phase established.
type login struct {
	ref       string // the connection's reference, in logs and client-visible errors
	tok       identity.Token
	target    string
	account   string
	database  string
	params    map[string]string // passed upstream
	up        Upstream
	upstream  *pgconn.HijackedConn
	origin    audit.Origin
	resource  string
	sess      Session
	clientKey cancelKey
	method    string        // how the client authenticated: "certificate" or "password"
	req       authz.Request // the connect request, re-checked while the session lives
	notAfter  time.Time     // the decision's: the end of the grants that allowed it
	deadline  time.Time     // the earlier of notAfter and up.NotAfter; zero: none
}

// parseUser splits the startup user name: "TARGET" or "ACCOUNT@TARGET".
func parseUser(user string) (target, account string, ok bool) {
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		account, target = user[:i], user[i+1:]
		if account == "" {
			return "", "", false
		}
	} else {
		target = user
	}
	return target, account, target != ""
}

// authenticate authenticates the client — by its verified client
// certificate, else by the token it sends as its password — checks a
// scoped token's scope and authorizes the connection. A refused
// authentication is audited ("db.auth", deny) when Config.Audit is set.
func (s *Server) authenticate(ctx context.Context, c net.Conn, sm *pgproto3.StartupMessage, l *login) error {
	user := sm.Parameters["user"]
	target, account, ok := parseUser(user)
	if !ok {
		return refuse(codeInvalidAuthorization, "warder: the user name must be TARGET or ACCOUNT@TARGET", nil)
	}
	if sm.Parameters["replication"] != "" && sm.Parameters["replication"] != "false" {
		return refuse(codeInvalidAuthorization, "warder: replication connections are not supported", nil)
	}
	l.target, l.account = target, account
	l.database = sm.Parameters["database"]
	if l.database == user {
		l.database = "" // libpq's default: not a choice
	}
	l.params = map[string]string{}
	var unknown, ignored []string
	for k, v := range sm.Parameters {
		switch {
		case strings.HasPrefix(k, "_pq_."):
			unknown = append(unknown, k)
		case k == "replication" || droppedParams[k]:
		case passedParams[strings.ToLower(k)]:
			l.params[k] = v
		default:
			ignored = append(ignored, k)
		}
	}
	if len(ignored) > 0 {
		slices.Sort(ignored)
		s.log.Info("postgres gateway: startup parameters not passed to the server", "params", clipList(ignored))
	}
	var out []byte
	if sm.ProtocolVersion != pgproto3.ProtocolVersion30 || len(unknown) > 0 {
		out, _ = (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown}).Encode(out)
	}
	var tok identity.Token
	var err error
	if chain := verifiedChain(c); chain != nil && s.cfg.CertAuth != nil {
		// TLS verified the certificate against the client CA; it stands
		// for a login token, which must still be live.
		l.method = "certificate"
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return err
			}
		}
		if tok, err = s.cfg.CertAuth.AuthenticateCert(ctx, chain); err != nil {
			s.auditRefusal(l, "anonymous", user, "client certificate no longer valid")
			return refuse(codeInvalidAuthorization, "warder: the client certificate is no longer valid: log in again (warder login)", err)
		}
	} else {
		l.method = "password"
		if tok, err = s.password(ctx, c, out, user); err != nil {
			var ce *clientError
			if errors.As(err, &ce) && ce.code == codeInvalidPassword {
				s.auditRefusal(l, "anonymous", user, "invalid or expired token")
			}
			return err
		}
	}
	if tok.Scope != "" && tok.Scope != identity.DBScope(target, account) {
		s.auditRefusal(l, tok.Actor(), user, "token scoped to another target or account")
		return refuse(codeInvalidAuthorization, "warder: this token is not valid for "+strconv.Quote(user)+": get one with `warder db login`",
			fmt.Errorf("token %s has scope %q", tok.ID, tok.Scope))
	}
	l.tok = tok
	l.origin.Actor = tok.Actor()

	res := authz.UID{Type: authz.TypeTarget, ID: target}
	if account != "" {
		res = authz.UID{Type: authz.TypeAccount, ID: target + "/" + account}
	}
	l.resource = res.String()
	src, _ := netip.ParseAddr(l.origin.Source)
	pr := authz.UID{Type: authz.TypeUser, ID: tok.Principal.Name}
	if tok.Principal.Kind == identity.KindMachine {
		pr.Type = authz.TypeMachine
	}
	req := authz.Request{Principal: pr, Action: authz.ActionConnect, Resource: res,
		Context: authz.Context{MFA: tok.MFA, MFAAt: tok.MFAAt, SourceIP: src, Via: authz.ViaDB}}
	l.req = req // without Details: a re-check is not audited
	req.Details = map[string]string{"auth": l.method, "token": tok.ID}
	if l.database != "" {
		req.Details["database"] = l.database
	}
	d, err := s.cfg.Authz.Authorize(ctx, l.origin, req)
	if err != nil || !d.Allow {
		if err == nil {
			err = errors.New("denied by policy")
		}
		return refuse(codeInvalidAuthorization, "warder: "+tok.Principal.Name+" may not connect to "+strconv.Quote(user), err)
	}
	l.notAfter = d.NotAfter
	return nil
}

// auditRefusal records a refused authentication as "db.auth" (deny) with
// the user name the client asked for; it never holds what was presented.
func (s *Server) auditRefusal(l *login, actor, user, reason string) {
	if s.cfg.Audit == nil {
		return
	}
	// Unauthenticated clients choose how many of these there are.
	ok, suppressed := s.refusals.Admit(s.now())
	if !ok {
		s.log.Info("postgres gateway: refused authentication (audit rate-limited)", "conn", l.ref, "reason", reason)
		return
	}
	o := l.origin
	o.Actor = actor
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The user name is the client's choice: bounded, valid UTF-8, no
	// control characters.
	user = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(user[:min(len(user), 128)], "?"))
	details := map[string]string{"reason": reason}
	if suppressed > 0 {
		details["suppressed"] = strconv.Itoa(suppressed)
	}
	if _, err := s.cfg.Audit.Append(ctx, o.Event("db.auth", "db:"+user, audit.OutcomeDeny, details)); err != nil {
		s.log.Error("postgres gateway: audit refused authentication", "conn", l.ref, "err", err)
	}
}

// password asks for the client's password, its Warder token, after
// sending out, and checks it.
func (s *Server) password(ctx context.Context, c net.Conn, out []byte, user string) (identity.Token, error) {
	out, _ = (&pgproto3.AuthenticationCleartextPassword{}).Encode(out)
	if _, err := c.Write(out); err != nil {
		return identity.Token{}, err
	}
	typ, body, err := readTyped(c, 4096)
	if err != nil {
		return identity.Token{}, err
	}
	if typ != 'p' {
		return identity.Token{}, refuse(codeProtocolViolation, "warder: expected a password message", nil)
	}
	var pm pgproto3.PasswordMessage
	if err := pm.Decode(body); err != nil {
		return identity.Token{}, refuse(codeProtocolViolation, "warder: invalid password message", err)
	}
	tok, err := s.cfg.Auth.Authenticate(ctx, pm.Password)
	if err != nil {
		return identity.Token{}, refuse(codeInvalidPassword, "warder: authentication failed for "+strconv.Quote(user), err)
	}
	return tok, nil
}

// verifiedChain returns the client certificate chain the TLS handshake of
// c verified, or nil: plaintext, or no certificate presented.
func verifiedChain(c net.Conn) []*x509.Certificate {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	if chains := tc.ConnectionState().VerifiedChains; len(chains) > 0 && len(chains[0]) > 0 {
		return chains[0]
	}
	return nil
}

// connectUpstream resolves the credential, starts the recording and logs
// in to the server, leaving the connection ready for queries.
func (s *Server) connectUpstream(ctx context.Context, l *login) error {
	up, err := s.cfg.Upstream.Resolve(WithOrigin(ctx, l.origin), l.tok.Principal, l.target, l.account, l.tok)
	if err != nil {
		var pe *PublicError
		if errors.As(err, &pe) {
			return refuse(codeConnectionFailure, "warder: "+pe.Message, err)
		}
		return refuse(codeConnectionFailure, "warder: cannot reach "+strconv.Quote(l.target), err)
	}
	l.up = up
	for i, r := range up.Rules {
		if err := checkRule(r); err != nil {
			return refuse(codeInternalError, "warder: internal error", fmt.Errorf("target %q rule %d: %w", l.target, i, err))
		}
	}
	sess, err := s.cfg.Recorder.Start(ctx, l.origin, Meta{Principal: l.tok.Principal, Target: l.target,
		Account: up.User, Source: l.origin.Source, GrantID: up.GrantID, LeaseID: up.LeaseID})
	if err != nil {
		return refuse(codeInternalError, "warder: cannot record the session", err)
	}
	l.sess = sess
	l.deadline = up.NotAfter
	if !l.notAfter.IsZero() && (l.deadline.IsZero() || l.notAfter.Before(l.deadline)) {
		l.deadline = l.notAfter
	}
	if s.cfg.Checker == nil && !l.deadline.IsZero() {
		sess.SetDeadline(l.deadline) // with a Checker, the watch ends the session (watch.go)
	}
	db := l.database
	if db == "" {
		db = up.Database
	}
	if db == "" {
		db = "postgres"
	}
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		quoteDSN(up.Host), up.Port, quoteDSN(up.User), quoteDSN(db)))
	if err != nil {
		return refuse(codeConnectionFailure, "warder: cannot reach "+strconv.Quote(l.target), err)
	}
	cfg.Password = string(up.Password)
	clear(up.Password)
	cfg.Fallbacks = nil
	if up.TLS != nil {
		cfg.TLSConfig = up.TLS.Clone()
		if up.PlaintextFallback {
			cfg.Fallbacks = []*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port}}
		}
	}
	cfg.ConnectTimeout = s.dial
	cfg.ValidateConnect = nil
	cfg.RuntimeParams = l.params
	cfg.RuntimeParams["application_name"] = "warder:" + sess.ID()
	dctx, cancel := context.WithTimeout(ctx, s.dial)
	defer cancel()
	pc, err := pgconn.ConnectConfig(dctx, cfg)
	cfg.Password = ""
	if err != nil {
		// A server error (database does not exist, too many connections)
		// is safe to show by its code; its text may name the account.
		code := codeConnectionFailure
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code != codeInvalidPassword && pe.Code != codeInvalidAuthorization {
			code = pe.Code
		}
		return refuse(code, "warder: cannot log in to "+strconv.Quote(l.target), err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		pc.Close(context.Background())
		return refuse(codeInternalError, "warder: internal error", err)
	}
	l.upstream = hj
	return nil
}

// quoteDSN quotes v as a libpq keyword/value connection string value.
func quoteDSN(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// welcome is what the client receives once logged in: AuthenticationOk,
// the server's ParameterStatus, the gateway's BackendKeyData and
// ReadyForQuery.
func welcome(l *login) []byte {
	out, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
	for k, v := range l.upstream.ParameterStatuses {
		out, _ = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(out)
	}
	out, _ = (&pgproto3.BackendKeyData{ProcessID: l.clientKey.pid, SecretKey: l.clientKey.secret[:]}).Encode(out)
	tx := l.upstream.TxStatus
	if tx == 0 {
		tx = 'I'
	}
	out, _ = (&pgproto3.ReadyForQuery{TxStatus: tx}).Encode(out)
	return out
}

// serveConn serves one client connection from its first byte to its end.
func (s *Server) serveConn(raw net.Conn) {
	raw = newLoopConn(raw) // the relay may move it into an event loop (loop_linux.go)
	defer raw.Close()
	l := &login{ref: newID(8)}
	l.origin.RequestID = l.ref
	if ap, err := netip.ParseAddrPort(raw.RemoteAddr().String()); err == nil {
		l.origin.Source = ap.Addr().Unmap().String()
	}
	log := s.log.With("conn", l.ref, "source", l.origin.Source)
	ctx, cancel := context.WithTimeout(s.ctx, s.handshake)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) }) // unblock reads on timeout or Close
	c, sm, err := s.negotiate(ctx, raw)
	if err == nil && sm != nil {
		err = s.authenticate(ctx, c, sm, l)
		if err == nil {
			err = s.connectUpstream(ctx, l)
		}
	}
	ok := stop()
	if err == nil && !ok {
		err = refuse(codeAdminShutdown, "warder: connection setup timed out", ctx.Err())
	}
	if err == nil && sm == nil {
		return // a cancel request, served
	}
	if err != nil {
		s.refused(log, c, l, err)
		return
	}
	raw.SetDeadline(time.Time{})
	l.clientKey = s.keys.add(cancelTarget{addr: net.JoinHostPort(l.up.Host, strconv.Itoa(l.up.Port)),
		pid: l.upstream.PID, secret: l.upstream.SecretKey})
	defer s.keys.remove(l.clientKey)
	log = log.With("session", l.sess.ID(), "principal", l.tok.Actor(), "target", l.target)
	log.Info("postgres gateway: session start", "account", l.up.User, "auth", l.method)
	stopWatch := s.watch(l, log)
	r := newRelay(s, c, l, log)
	status := r.run(welcome(l))
	stopWatch()
	l.upstream.Conn.Close()
	c.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := l.sess.Close(cctx, status); err != nil {
		log.Error("postgres gateway: close recording", "err", err)
	}
	ccancel()
	if l.up.Release != nil {
		l.up.Release()
	}
	log.Info("postgres gateway: session end", "status", status)
}

// refused ends a connection that failed before relaying: the client gets
// a FATAL error (generic, with the reference), the log gets the cause.
func (s *Server) refused(log interface {
	Info(string, ...any)
	Warn(string, ...any)
}, c net.Conn, l *login, err error) {
	if l.upstream != nil {
		l.upstream.Conn.Close()
	}
	if l.sess != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		l.sess.Close(cctx, StatusError)
		cancel()
	}
	if l.up.Release != nil {
		l.up.Release()
	}
	var ce *clientError
	if !errors.As(err, &ce) {
		log.Info("postgres gateway: connection ended during startup", "err", err)
		return
	}
	log.Warn("postgres gateway: connection refused", "err", err)
	if c == nil {
		return
	}
	msg := ce.msg
	if ce.err != nil || ce.code == codeInternalError {
		msg += " (ref " + l.ref + ")"
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(fatal(nil, ce.code, msg))
}

// clipList joins names for a log line, at most 16 of them, each at most
// 64 bytes.
func clipList(names []string) string {
	out := make([]string, 0, min(len(names), 16))
	for _, n := range names[:min(len(names), 16)] {
		out = append(out, strconv.Quote(strings.ToValidUTF8(n[:min(len(n), 64)], "?")))
	}
	return strings.Join(out, ",")
}
