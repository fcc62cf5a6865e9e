package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/hostkey"
	"github.com/warderhq/warder/internal/identity"
)

// deniedMessage is all a refused user is told; the reason is logged. The
// one exception is nameAccountError, which tells the user what to do.
const deniedMessage = "warder: access denied or target unavailable (connection %s)"

// nameAccountError refuses a connection that names only a target for
// which the Resolver has no account for the user (no default account):
// the user must name one. The target exists (the Resolver said so), and
// the user typed its name, so the message reveals nothing new.
type nameAccountError struct{ target string }

func (e *nameAccountError) Error() string {
	return fmt.Sprintf("target %s has no default account for you: name an account: ACCOUNT@%s", e.target, e.target)
}

// conn is one client connection and, once authorized, its upstream
// connection. A connection nested in a ProxyJump channel (see jump.go) is
// a conn too, whose nc is the channel.
//
// Goroutines: serve runs the connection; it starts one goroutine for the
// client's global requests, one for the upstream's, one idle watcher, and
// one per channel (each of which joins its own helpers; a ProxyJump
// channel's runs the nested connection's serve). serve returns only once
// all of them have ended.
type conn struct {
	srv *Server
	nc  net.Conn
	id  string
	// jump is set, before serve, on a connection nested in a ProxyJump
	// channel; nil on a connection from the network.
	jump *jumpInfo

	// Set by serve before any channel is handled, read-only afterwards.
	sc       *gossh.ServerConn
	p        identity.Principal
	tokenID  string // the login token the certificate is bound to; "" if none
	origin   audit.Origin
	target   string
	account  string
	up       Upstream
	upConn   gossh.Conn // set under mu too, for shutdown
	rules    []Rule
	req      authz.Request // the connect request, re-checked by watchAccess
	notAfter time.Time     // the connect decision's NotAfter

	lastActive     atomic.Int64   // unix nanoseconds of the last data moved
	remoteForwards atomic.Bool    // a remote forward was allowed: accept the target's forwarded-tcpip channels
	wg             sync.WaitGroup // every goroutine of the connection but serve

	// mu protects the following.
	mu       sync.Mutex
	ending   bool   // shutdown was called
	status   string // the first shutdown's status
	upNC     net.Conn
	sessions map[*session]struct{}
}

// touch records activity, for the idle timeout.
func (c *conn) touch() { c.lastActive.Store(c.srv.now().UnixNano()) }

func (c *conn) serve() {
	s := c.srv
	defer c.nc.Close()
	c.nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	hc := &countingConn{Conn: c.nc}
	sc, chans, reqs, err := gossh.NewServerConn(hc, s.serverConfig(c))
	if err != nil {
		c.handshakeFailed(err, hc.n.Load())
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.sc = sc
	p, _ := parsePrincipal(sc.Permissions.Extensions[principalExt])
	c.p, c.tokenID = p, sc.Permissions.Extensions[tokenExt]
	c.origin = audit.Origin{Actor: p.Actor(), Source: hostOf(sc.RemoteAddr()), RequestID: c.id}
	c.touch()

	ctx, cancel := context.WithCancel(context.Background())
	wg := &c.wg
	defer func() {
		sc.Close()
		cancel()
		wg.Wait()
	}()

	// A user name without "@" names a target, or is the login of a
	// ProxyJump connection: the first channel tells which.
	var first gossh.NewChannel
	var firstReq *gossh.Request
	if c.jump == nil && s.cfg.HostCA != nil && !strings.Contains(sc.User(), "@") {
		var jumps, ok bool
		if first, firstReq, jumps, ok = c.awaitFirst(ctx, chans, reqs); !ok {
			return
		}
		if jumps {
			c.serveJumps(ctx, first, chans, reqs)
			return
		}
	}

	status, err := c.connect(ctx)
	if err != nil {
		s.log.Info("ssh: connection refused", "conn", c.id, "principal", p.Actor(), "user", sc.User(), "source", c.origin.Source, "err", err)
		msg := fmt.Sprintf(deniedMessage, c.id)
		var na *nameAccountError
		if errors.As(err, &na) {
			msg = fmt.Sprintf("warder: %v (connection %s)", na, c.id)
		}
		if first != nil {
			first.Reject(gossh.Prohibited, msg)
		}
		if firstReq != nil {
			firstReq.Reply(false, nil)
		}
		wg.Go(func() { gossh.DiscardRequests(reqs) })
		refuse(chans, msg)
		if c.up.Release != nil {
			c.up.Release(status)
		}
		return
	}
	defer c.upConn.Close()
	s.log.Info("ssh: connected", "conn", c.id, "principal", p.Actor(), "target", c.target, "account", c.account, "source", c.origin.Source)

	if firstReq != nil {
		c.globalRequest(firstReq)
	}
	wg.Go(func() { c.globalRequests(reqs) })
	wg.Go(func() { c.idleWatch(ctx) })
	wg.Go(func() { c.watchAccess(ctx) })
	if first != nil {
		c.handleChannel(ctx, first)
	}
	for nch := range chans {
		c.handleChannel(ctx, nch)
	}
	// The client went away (or shutdown closed it): end the upstream too,
	// which ends every channel.
	c.upConn.Close()
	cancel()
	wg.Wait()
	c.mu.Lock()
	status = c.status
	c.mu.Unlock()
	if status == "" {
		status = StatusClosed
	}
	if c.up.Release != nil {
		c.up.Release(status)
	}
	s.log.Info("ssh: disconnected", "conn", c.id, "principal", p.Actor(), "target", c.target, "account", c.account, "status", status)
}

// handleChannel starts serving a channel the client opened, on c.wg.
func (c *conn) handleChannel(ctx context.Context, nch gossh.NewChannel) {
	switch nch.ChannelType() {
	case "session":
		c.wg.Go(func() { c.handleSession(ctx, nch) })
	case "direct-tcpip":
		c.wg.Go(func() { c.directTCPIP(ctx, nch) })
	default:
		nch.Reject(gossh.UnknownChannelType, "warder: channel type not supported")
	}
}

// connect authorizes the connection, resolves its upstream and logs in to
// it. On error, the status is for Upstream.Release (if c.up has one).
func (c *conn) connect(ctx context.Context) (string, error) {
	s := c.srv
	target, account, err := c.destination()
	if err != nil {
		return StatusFailed, fmt.Errorf("user name %q: %v", c.sc.User(), err)
	}
	if account == "" {
		if account, err = s.cfg.Upstream.DefaultAccount(ctx, c.p, target); err != nil {
			return StatusFailed, fmt.Errorf("default account of %q: %w", target, err)
		}
		if account == "" {
			return StatusFailed, &nameAccountError{target: target}
		}
	}
	c.target, c.account = target, account
	pu, err := principalUID(c.p)
	if err != nil {
		return StatusFailed, err
	}
	var src netip.Addr
	if ap, err := netip.ParseAddrPort(c.sc.RemoteAddr().String()); err == nil {
		src = ap.Addr()
	}
	if err := s.checkActive(ctx, c.p, c.tokenID); err != nil {
		return StatusFailed, err
	}
	c.req = authz.Request{
		Principal: pu,
		Action:    authz.ActionConnect,
		Resource:  accountUID(target, account),
		Context:   authz.Context{Via: authz.ViaSSH, SourceIP: src},
		Details:   map[string]string{"connection": c.id},
	}
	d, err := s.cfg.Authz.Authorize(ctx, c.origin, c.req)
	if err != nil {
		return StatusFailed, fmt.Errorf("authorize: %w", err)
	}
	if !d.Allow {
		return StatusFailed, fmt.Errorf("not authorized to connect to %s/%s", target, account)
	}
	c.notAfter = d.NotAfter

	up, err := s.cfg.Upstream.Resolve(WithOrigin(ctx, c.origin), c.p, target, account)
	if err != nil {
		return StatusFailed, fmt.Errorf("resolve %s/%s: %w", target, account, err)
	}
	c.up = up
	if err := checkRules(up.Rules); err != nil {
		return StatusFailed, fmt.Errorf("target %s: %w", target, err)
	}
	c.rules = up.Rules
	if err := c.dialUpstream(ctx); err != nil {
		return StatusFailed, err
	}
	return "", nil
}

// ErrHostKeyMismatch means a target presented a host key that is neither
// its pinned one nor a valid host certificate of its host CA. Errors that
// wrap it wrap a *hostkey.MismatchError too.
var ErrHostKeyMismatch = errors.New("ssh: upstream host key mismatch")

// destination returns the target and account the connection asks for: from
// the SSH user name ("ACCOUNT@TARGET" or "TARGET"), or for a connection
// nested in a ProxyJump channel, the channel's target and the user name
// as the account.
func (c *conn) destination() (target, account string, err error) {
	if c.jump == nil {
		return parseDestination(c.sc.User())
	}
	account = c.sc.User()
	if account == "" || strings.ContainsAny(account, "/\x00\r\n") {
		return "", "", errors.New("invalid account name")
	}
	return c.jump.target, account, nil
}

// dialUpstream connects and logs in to c.up, within Config.DialTimeout.
func (c *conn) dialUpstream(ctx context.Context) error {
	s := c.srv
	if c.up.HostKey == nil && c.up.HostCA == nil {
		return fmt.Errorf("target %q has no pinned host key and no host CA", c.target)
	}
	hostKeys := hostkey.Verifier{Pinned: c.up.HostKey, CA: c.up.HostCA, Now: s.now}
	var mismatch *hostkey.MismatchError
	cfg := &gossh.ClientConfig{
		Config: gossh.Config{Ciphers: Ciphers},
		User:   c.up.User,
		Auth:   c.up.Auth,
		HostKeyCallback: func(addr string, remote net.Addr, key gossh.PublicKey) error {
			err := hostKeys.Check(addr, remote, key)
			errors.As(err, &mismatch)
			return err
		},
		HostKeyAlgorithms: hostKeys.Algorithms(),
		ClientVersion:     "SSH-2.0-Warder",
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", c.up.Addr)
	if err != nil {
		return fmt.Errorf("dial %s (%s): %w", c.target, c.up.Addr, err)
	}
	deadline, _ := dctx.Deadline()
	nc.SetDeadline(deadline)
	uc, chans, reqs, err := gossh.NewClientConn(nc, c.up.Addr, cfg)
	if err != nil {
		nc.Close()
		if mismatch != nil {
			c.auditHostKey(ctx, mismatch)
			return fmt.Errorf("%s (%s): %w: %w", c.target, c.up.Addr, ErrHostKeyMismatch, mismatch)
		}
		return fmt.Errorf("log in to %s as %s: %w", c.target, c.up.User, err)
	}
	nc.SetDeadline(time.Time{})
	c.mu.Lock()
	ending := c.ending
	if !ending {
		c.upConn, c.upNC = uc, nc
	}
	c.mu.Unlock()
	if ending {
		uc.Close()
		return errors.New("the connection is shutting down")
	}
	c.wg.Go(func() { gossh.DiscardRequests(reqs) }) // ends when uc closes
	c.wg.Go(func() { c.upstreamChannels(chans) })   // ends when uc closes
	return nil
}

// auditHostKey logs and audits a refused upstream host key: the same
// event whether the target pins a key or trusts a host CA.
func (c *conn) auditHostKey(ctx context.Context, m *hostkey.MismatchError) {
	details := map[string]string{
		"addr":   c.up.Addr,
		"got":    hostkey.Fingerprint(m.Got),
		"reason": m.Reason,
	}
	if m.Pinned != nil {
		details["pinned"] = gossh.FingerprintSHA256(m.Pinned)
	}
	if m.CA != nil {
		details["host_ca"] = gossh.FingerprintSHA256(m.CA)
	}
	if cert, ok := m.Got.(*gossh.Certificate); ok {
		details["got_signer"] = gossh.FingerprintSHA256(cert.SignatureKey)
	}
	c.srv.log.Warn("ssh: upstream host key mismatch", "conn", c.id, "target", c.target, "addr", c.up.Addr,
		"got", hostkey.Describe(m.Got), "pinned", details["pinned"], "host_ca", details["host_ca"], "reason", m.Reason)
	c.audit(ctx, "ssh.host_key_mismatch", authz.UID{Type: authz.TypeTarget, ID: c.target}.String(), audit.OutcomeFailure, details)
}

// audit writes an event to Config.Audit, if set. A failure is logged: the
// event is also in the operational log and the recording.
func (c *conn) audit(ctx context.Context, action, resource, outcome string, details map[string]string) {
	if c.srv.cfg.Audit == nil {
		return
	}
	details["connection"] = c.id
	if _, err := c.srv.cfg.Audit.Append(ctx, c.origin.Event(action, resource, outcome, details)); err != nil {
		c.srv.log.Error("ssh: audit", "conn", c.id, "action", action, "err", err)
	}
}

// upstreamChannels handles channels the target opens: forwarded-tcpip for
// an allowed remote forward; everything else is refused.
func (c *conn) upstreamChannels(chans <-chan gossh.NewChannel) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for nch := range chans {
		if nch.ChannelType() != "forwarded-tcpip" || !c.remoteForwards.Load() {
			nch.Reject(gossh.Prohibited, "warder: not allowed")
			continue
		}
		wg.Go(func() { c.forward(nch, c.sc) })
	}
}

// globalRequests answers the client's global requests until the
// connection ends.
func (c *conn) globalRequests(reqs <-chan *gossh.Request) {
	for r := range reqs {
		c.globalRequest(r)
	}
}

// globalRequest answers a global request: remote port forwarding is
// passed to the target when the policy allows it (remoteForward); the
// rest is refused.
func (c *conn) globalRequest(r *gossh.Request) {
	switch {
	case r.Type == "tcpip-forward":
		c.remoteForward(r)
	case r.Type == "cancel-tcpip-forward" && c.remoteForwards.Load():
		ok, payload, err := c.upConn.SendRequest(r.Type, r.WantReply, r.Payload)
		if err != nil {
			ok = false
		}
		r.Reply(ok, payload)
	default:
		r.Reply(false, nil)
	}
}

// idleWatch shuts the connection down once no data has moved for
// Config.IdleTimeout.
func (c *conn) idleWatch(ctx context.Context) {
	timeout := c.srv.cfg.IdleTimeout
	if timeout <= 0 {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		idle := c.srv.now().Sub(time.Unix(0, c.lastActive.Load()))
		if idle >= timeout {
			c.shutdown(StatusIdle, fmt.Sprintf("warder: session closed after %s without activity", timeout))
			return
		}
		t.Reset(timeout - idle)
	}
}

// shutdown ends the connection: it tells the user msg on every session
// channel (waiting at most a second for slow clients) and closes both
// legs. The first call's status is the connection's.
func (c *conn) shutdown(status, msg string) {
	c.mu.Lock()
	if c.ending {
		c.mu.Unlock()
		return
	}
	c.ending, c.status = true, status
	sessions := make([]*session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	upNC := c.upNC
	c.mu.Unlock()
	if msg != "" && len(sessions) > 0 {
		written := make(chan struct{})
		go func() { // ends when the writes are done or the conn is closed
			defer close(written)
			for _, s := range sessions {
				s.tell("\r\n" + msg + "\r\n")
			}
		}()
		select {
		case <-written:
		case <-time.After(time.Second):
		}
	}
	c.nc.Close()
	if upNC != nil {
		upNC.Close()
	}
}

// forward relays a port-forwarding channel, unrecorded, to the other leg.
func (c *conn) forward(nch gossh.NewChannel, to interface {
	OpenChannel(name string, data []byte) (gossh.Channel, <-chan *gossh.Request, error)
}) {
	out, outReqs, err := to.OpenChannel(nch.ChannelType(), nch.ExtraData())
	if err != nil {
		var oce *gossh.OpenChannelError
		if errors.As(err, &oce) {
			nch.Reject(oce.Reason, oce.Message)
		} else {
			nch.Reject(gossh.ConnectionFailed, "warder: forward failed")
		}
		return
	}
	in, inReqs, err := nch.Accept()
	if err != nil {
		out.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { gossh.DiscardRequests(outReqs) })
	wg.Go(func() { gossh.DiscardRequests(inReqs) })
	pipe := func(dst, src gossh.Channel) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				c.touch()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.CloseWrite()
	}
	var copies sync.WaitGroup
	copies.Go(func() { pipe(out, in) })
	copies.Go(func() { pipe(in, out) })
	copies.Wait()
	in.Close()
	out.Close()
	wg.Wait()
}

// refuse rejects every channel the client opens with msg, until it gives
// up or a few seconds pass.
func refuse(chans <-chan gossh.NewChannel, msg string) {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case nch, ok := <-chans:
			if !ok {
				return
			}
			nch.Reject(gossh.Prohibited, msg)
		case <-t.C:
			return
		}
	}
}

func principalUID(p identity.Principal) (authz.UID, error) {
	switch p.Kind {
	case identity.KindUser:
		return authz.UID{Type: authz.TypeUser, ID: p.Name}, nil
	case identity.KindMachine:
		return authz.UID{Type: authz.TypeMachine, ID: p.Name}, nil
	}
	return authz.UID{}, fmt.Errorf("unknown principal %q", p.Actor())
}

func accountUID(target, account string) authz.UID {
	return authz.UID{Type: authz.TypeAccount, ID: target + "/" + account}
}

func hostOf(a net.Addr) string {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap().String()
	}
	return a.String()
}
