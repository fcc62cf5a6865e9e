package ssh

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/gateway"
)

// countingConn counts the bytes read from a client connection, to tell a
// client that sent something the gateway could not use (garbage, a failed
// login) from one that connected and left (a health check, a port scan).
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// handshakeAudit limits the audit events of failed handshakes (garbage
// costs an attacker nothing, a durable audit event does): see
// gateway.AuditLimit.
type handshakeAudit = gateway.AuditLimit

const handshakeAuditWindow = gateway.AuditWindow

// handshakeFailed logs a failed handshake and audits it
// ("ssh.handshake_failed", details reason and bytes) when the client sent
// anything: a connection closed without a byte (a load balancer's health
// check) is only logged. Nothing the client sent is repeated.
func (c *conn) handshakeFailed(err error, read int64) {
	s := c.srv
	source := hostOf(c.nc.RemoteAddr())
	reason := "protocol error"
	var authErr *gossh.ServerAuthError
	var ne net.Error
	switch {
	case errors.As(err, &authErr):
		reason = "authentication failed"
	case errors.As(err, &ne) && ne.Timeout():
		reason = "timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		reason = "client disconnected"
	}
	if read == 0 {
		s.log.Debug("ssh: connection closed before the handshake", "conn", c.id, "source", source, "err", err)
		return
	}
	s.log.Info("ssh: handshake failed", "conn", c.id, "source", source, "reason", reason, "bytes", read, "err", err)
	if s.cfg.Audit == nil {
		return
	}
	ok, suppressed := s.hsAudit.Admit(s.now())
	if !ok {
		return
	}
	details := map[string]string{"reason": reason, "bytes": strconv.FormatInt(read, 10), "connection": c.id}
	if suppressed > 0 {
		details["suppressed"] = strconv.Itoa(suppressed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := audit.Origin{Source: source, RequestID: c.id}
	if _, err := s.cfg.Audit.Append(ctx, o.Event("ssh.handshake_failed", "ssh:gateway", audit.OutcomeFailure, details)); err != nil {
		s.log.Error("ssh: audit", "conn", c.id, "action", "ssh.handshake_failed", "err", err)
	}
}
