package ssh

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/gateway"
	"github.com/warderhq/warder/internal/identity"
)

// This file keeps a connection within the access that allowed it: the
// end of that access (watchAccess), the principal's state (accessChecker)
// and port forwarding, decided per request (authorizeForward).

// errInactive means the principal was disabled or deleted.
var errInactive = errors.New("the principal is disabled or deleted")

// checkActive fails with errInactive when Config.PrincipalActive says p
// may no longer connect, or Config.TokenLive that the login token tokenID
// is no longer live.
func (s *Server) checkActive(ctx context.Context, p identity.Principal, tokenID string) error {
	if s.cfg.TokenLive != nil {
		if tokenID == "" {
			return fmt.Errorf("%s: no login token: %w", p.Actor(), errInactive)
		}
		if _, err := s.cfg.TokenLive(ctx, tokenID); errors.Is(err, identity.ErrBadToken) {
			return fmt.Errorf("%s: login token ended: %w", p.Actor(), errInactive)
		} else if err != nil {
			return fmt.Errorf("check the login token of %s: %w", p.Actor(), err)
		}
	}
	if s.cfg.PrincipalActive == nil {
		return nil
	}
	ok, err := s.cfg.PrincipalActive(ctx, p)
	switch {
	case err != nil:
		return fmt.Errorf("check principal %s: %w", p.Actor(), err)
	case !ok:
		return fmt.Errorf("%s: %w", p.Actor(), errInactive)
	}
	return nil
}

// accessChecker is the gateway.Checker of one connection's re-checks: a
// principal no longer active is denied; otherwise the policies decide.
type accessChecker struct {
	s       *Server
	p       identity.Principal
	tokenID string
}

func (a accessChecker) Check(ctx context.Context, req authz.Request) (authz.Decision, error) {
	if err := a.s.checkActive(ctx, a.p, a.tokenID); err != nil {
		if errors.Is(err, errInactive) {
			return authz.Decision{Decision: "deny", Policies: []string{}}, nil
		}
		return authz.Decision{}, err
	}
	return a.s.cfg.Authz.Check(ctx, req)
}

// accessDeadline is when the connection's access ends on its own: the
// earlier of the check-out lease's expiry and the decision's NotAfter
// (the end of the just-in-time grants that alone allowed it); zero for
// neither.
func (c *conn) accessDeadline() time.Time {
	d := c.up.Expires
	if !c.notAfter.IsZero() && (d.IsZero() || c.notAfter.Before(d)) {
		d = c.notAfter
	}
	return d
}

// watchAccess ends the connection, with a message to the user on every
// session, when its access ends: at accessDeadline, or when a re-check of
// the connect request every Config.RecheckInterval no longer allows it
// (grant revoked or expired, policy removed, principal disabled; see
// gateway.Watch). It returns when ctx ends.
func (c *conn) watchAccess(ctx context.Context) {
	s := c.srv
	log := s.log.With("conn", c.id)
	gateway.Watch(ctx, accessChecker{s, c.p, c.tokenID}, c.req, c.accessDeadline(), s.cfg.RecheckInterval, log, func(msg string) {
		status := StatusKilled
		if msg == gateway.MsgExpired {
			status = StatusExpired
		}
		s.log.Info("ssh: access ended; closing the connection", "conn", c.id, "principal", c.p.Actor(),
			"target", c.target, "account", c.account, "reason", msg)
		c.audit(ctx, "ssh.access_ended", accountUID(c.target, c.account).String(), audit.OutcomeDeny, map[string]string{"reason": msg})
		c.end(status, msg)
	})
}

// end notes why in every started session's recording, then shuts the
// connection down with status and tells the user "warder: msg".
func (c *conn) end(status, msg string) {
	c.mu.Lock()
	var recs []Recording
	for s := range c.sessions {
		if s.isStarted() && s.rec != nil {
			recs = append(recs, s.rec)
		}
	}
	c.mu.Unlock()
	for _, r := range recs {
		// A recording closing meanwhile refuses the note; its session
		// ends anyway.
		r.Record(Note, fmt.Appendf(nil, `{"event":"ended","status":%q,"message":%q}`, status, msg))
	}
	c.shutdown(status, "warder: "+msg)
}

// authorizeForward decides one port forwarding request with the policy
// engine: action port_forward on the connection's account, context as the
// connection's (via ssh) plus context.forward, the direction
// (authz.ForwardLocal for ssh -L and -W, authz.ForwardRemote for ssh -R)
// and the destination host and port as the client asked; the decision is
// audited with the direction and the destination. Refused when the
// decision cannot be made, and, without one but audited, when port is
// above 65535 or host is not one a policy can be trusted to have seen:
// longer than 255 bytes, not UTF-8 or holding control characters (the
// target would dial the host as sent, so it is never shortened or
// repaired for the policy).
func (c *conn) authorizeForward(ctx context.Context, direction, host string, port uint32) bool {
	s := c.srv
	if reason := badForward(host, port); reason != "" {
		s.log.Info("ssh: port forwarding refused", "conn", c.id, "principal", c.p.Actor(), "target", c.target,
			"forward", direction, "reason", reason)
		c.audit(ctx, "ssh.port_forward_refused", accountUID(c.target, c.account).String(), audit.OutcomeDeny, map[string]string{
			"forward": direction, "reason": reason, "destination": clip(strconv.QuoteToASCII(host), 300) + ":" + strconv.FormatUint(uint64(port), 10),
		})
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	req := c.req
	req.Action = authz.ActionPortForward
	req.Context.Forward = &authz.Forward{Direction: direction, Host: host, Port: uint16(port)}
	req.Details = map[string]string{
		"connection":  c.id,
		"forward":     direction,
		"destination": net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10)),
	}
	d, err := s.cfg.Authz.Authorize(ctx, c.origin, req)
	if err != nil || !d.Allow {
		s.log.Info("ssh: port forwarding refused", "conn", c.id, "principal", c.p.Actor(), "target", c.target,
			"forward", direction, "destination", req.Details["destination"], "err", err)
		return false
	}
	return true
}

// badForward says why a forward to host:port is refused before any
// policy decision, or "" when it is not.
func badForward(host string, port uint32) string {
	switch {
	case port > math.MaxUint16:
		return "no such port"
	case len(host) > 255:
		return "destination host longer than 255 bytes"
	case !utf8.ValidString(host):
		return "destination host not UTF-8"
	case strings.IndexFunc(host, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return "destination host with control characters"
	}
	return ""
}

// directTCPIP serves a local forward (ssh -L, -W): a direct-tcpip channel
// to host:port as seen from the target, relayed through the target's sshd
// if the policy allows it.
func (c *conn) directTCPIP(ctx context.Context, nch gossh.NewChannel) {
	var d struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if gossh.Unmarshal(nch.ExtraData(), &d) != nil {
		nch.Reject(gossh.ConnectionFailed, "warder: malformed forwarding request")
		return
	}
	if !c.authorizeForward(ctx, authz.ForwardLocal, d.Host, d.Port) {
		nch.Reject(gossh.Prohibited, "warder: port forwarding is not allowed")
		return
	}
	c.forward(nch, c.upConn)
}

// remoteForward answers a tcpip-forward request (ssh -R): it asks the
// target to listen if the policy allows it. The target's forwarded-tcpip
// channels are accepted once one remote forward was allowed.
func (c *conn) remoteForward(r *gossh.Request) {
	var m struct {
		Addr string
		Port uint32
	}
	if gossh.Unmarshal(r.Payload, &m) != nil || !c.authorizeForward(context.Background(), authz.ForwardRemote, m.Addr, m.Port) {
		r.Reply(false, nil)
		return
	}
	c.remoteForwards.Store(true)
	ok, payload, err := c.upConn.SendRequest(r.Type, r.WantReply, r.Payload)
	r.Reply(ok && err == nil, payload)
}
