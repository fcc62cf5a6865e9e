package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/sshca"
)

// jumpHostRE matches the host names a ProxyJump channel may ask for, as
// OpenSSH sends them (lower case).
var jumpHostRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,252}$`)

// hostCertTTL is how long a nested connection's host certificate is
// valid: the client checks it during the handshake only.
const hostCertTTL = 5 * time.Minute

// jumpInfo is what a connection nested in a ProxyJump channel knows of it.
type jumpInfo struct {
	target string       // the target the channel asked for
	host   string       // the host name the channel asked for ("web1.warder")
	signer gossh.Signer // the host key with its certificate for host and target
	outer  *conn        // the connection carrying the channel
}

// jumpTarget returns the target a direct-tcpip channel to host:port
// reaches through ProxyJump: TARGET for "TARGET" or "TARGET"+JumpSuffix on
// port 22. It does not check that the target exists.
func (s *Server) jumpTarget(host string, port uint32) (string, bool) {
	if port != 22 || !jumpHostRE.MatchString(host) {
		return "", false
	}
	target := strings.TrimSuffix(host, s.cfg.JumpSuffix)
	if target == "" {
		return "", false
	}
	return target, true
}

// directTCPIP is the extra data of a direct-tcpip channel (RFC 4254 7.2).
type directTCPIP struct {
	Host     string
	Port     uint32
	OrigHost string
	OrigPort uint32
}

// jumpChannel reports whether nch is a ProxyJump channel to a target the
// resolver knows, and returns the target and host asked for.
func (c *conn) jumpChannel(ctx context.Context, nch gossh.NewChannel) (target, host string, ok bool) {
	s := c.srv
	if s.cfg.HostCA == nil || nch.ChannelType() != "direct-tcpip" {
		return "", "", false
	}
	var d directTCPIP
	if gossh.Unmarshal(nch.ExtraData(), &d) != nil {
		return "", "", false
	}
	target, ok = s.jumpTarget(d.Host, d.Port)
	if !ok {
		return "", "", false
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	if _, err := s.cfg.Upstream.DefaultAccount(ctx, c.p, target); err != nil {
		s.log.Info("ssh: ProxyJump to an unknown target", "conn", c.id, "principal", c.p.Actor(), "host", d.Host, "err", err)
		return "", "", false
	}
	return target, d.Host, true
}

// awaitFirst waits for the first channel the client opens (or a remote
// forwarding request) on a connection whose user name may be a target or a
// ProxyJump login, and reports whether it is a ProxyJump channel. Other
// global requests meanwhile are refused. ok is false when the connection
// ended (or stayed idle for Config.IdleTimeout) first.
func (c *conn) awaitFirst(ctx context.Context, chans <-chan gossh.NewChannel, reqs <-chan *gossh.Request) (first gossh.NewChannel, req *gossh.Request, jumps, ok bool) {
	var idle <-chan time.Time
	if t := c.srv.cfg.IdleTimeout; t > 0 {
		timer := time.NewTimer(t)
		defer timer.Stop()
		idle = timer.C
	}
	for {
		select {
		case nch, open := <-chans:
			if !open {
				return nil, nil, false, false
			}
			_, _, jumps := c.jumpChannel(ctx, nch)
			return nch, nil, jumps, true
		case r, open := <-reqs:
			if !open {
				return nil, nil, false, false
			}
			if r.Type == "tcpip-forward" {
				return nil, r, false, true
			}
			r.Reply(false, nil)
		case <-idle:
			return nil, nil, false, false
		}
	}
}

// serveJumps serves a connection that carries ProxyJump channels, first
// among them, until the client closes it, or until no nested connection
// has been open on it for Config.IdleTimeout: each nested connection has
// its own idle timeout, and the outer one, which carries no session of
// its own, must not outlive them all. Every other channel and global
// request is refused.
func (c *conn) serveJumps(ctx context.Context, first gossh.NewChannel, chans <-chan gossh.NewChannel, reqs <-chan *gossh.Request) {
	s := c.srv
	s.log.Info("ssh: ProxyJump connection", "conn", c.id, "principal", c.p.Actor(), "user", c.sc.User(), "source", c.origin.Source)
	c.wg.Go(func() { gossh.DiscardRequests(reqs) })
	stop := make(chan struct{})
	defer close(stop)
	ended := make(chan struct{}) // a nested connection ended
	var idle *time.Timer
	var idleC <-chan time.Time
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	armIdle := func() {
		if t := s.cfg.IdleTimeout; t > 0 {
			idle = time.NewTimer(t)
			idleC = idle.C
		}
	}
	active := 0
	armIdle() // stopped by the first inner connection, if one is accepted
	// next returns the client's next channel, nil once the connection
	// has ended, meanwhile closing it when it stays idle.
	next := func() gossh.NewChannel {
		for {
			select {
			case nch, open := <-chans:
				if !open {
					return nil
				}
				return nch
			case <-ended:
				if active--; active == 0 {
					armIdle()
				}
			case <-idleC:
				idleC = nil
				s.log.Info("ssh: ProxyJump connection idle, closing", "conn", c.id, "principal", c.p.Actor(), "idle", s.cfg.IdleTimeout)
				c.sc.Close() // then chans is closed
			}
		}
	}
	for nch := first; nch != nil; nch = next() {
		target, host, ok := c.jumpChannel(ctx, nch)
		switch {
		case ok:
			active++
			if idle != nil {
				idle.Stop()
				idle, idleC = nil, nil
			}
			c.wg.Go(func() {
				c.serveJump(nch, target, host)
				select {
				case ended <- struct{}{}:
				case <-stop:
				}
			})
		case nch.ChannelType() == "direct-tcpip":
			s.log.Info("ssh: port forwarding refused", "conn", c.id, "principal", c.p.Actor())
			nch.Reject(gossh.Prohibited, "warder: port forwarding is not allowed")
		default:
			nch.Reject(gossh.Prohibited, "warder: this connection is for ProxyJump only; log in as ACCOUNT@TARGET for a session")
		}
	}
	s.log.Info("ssh: disconnected", "conn", c.id, "principal", c.p.Actor())
}

// serveJump accepts a ProxyJump channel and serves the nested connection
// over it. It returns when that connection has ended.
func (c *conn) serveJump(nch gossh.NewChannel, target, host string) {
	s := c.srv
	principals := []string{host}
	for _, p := range []string{target, target + s.cfg.JumpSuffix} {
		if p != host {
			principals = append(principals, p)
		}
	}
	cert, err := sshca.IssueHostCert(s.cfg.HostCA, sshca.HostCert{
		Key: s.cfg.HostSigner.PublicKey(), Principals: principals, Now: s.now(), TTL: hostCertTTL,
	})
	var signer gossh.Signer
	if err == nil {
		signer, err = gossh.NewCertSigner(cert, s.cfg.HostSigner)
	}
	if err != nil {
		s.log.Error("ssh: host certificate", "conn", c.id, "target", target, "err", err)
		nch.Reject(gossh.ConnectionFailed, fmt.Sprintf(deniedMessage, c.id))
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { gossh.DiscardRequests(reqs) }) // ends when the channel closes
	nested := &conn{
		srv: s, id: newID(),
		nc:   &chanConn{ch: ch, local: c.nc.LocalAddr(), remote: c.nc.RemoteAddr()},
		jump: &jumpInfo{target: target, host: host, signer: signer, outer: c},
	}
	if !s.track(nested) {
		ch.Close()
		return
	}
	defer s.wg.Done()
	defer s.untrack(nested)
	s.log.Info("ssh: ProxyJump channel", "conn", c.id, "nested", nested.id, "principal", c.p.Actor(), "target", target, "host", host)
	nested.serve()
}

// jumpServerConfig completes cfg for a nested connection: its host key is
// the certified one, and only a user certificate of the outer
// connection's principal authenticates.
func (s *Server) jumpServerConfig(c *conn, cfg *gossh.ServerConfig) *gossh.ServerConfig {
	cfg.AddHostKey(c.jump.signer)
	want := c.jump.outer.p.Actor()
	cfg.PublicKeyCallback = func(cm gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
		if s.cfg.UserCA == nil {
			return nil, errors.New("ssh: no user CA")
		}
		perms, err := s.certAuth(key)
		if err != nil {
			return nil, err
		}
		if got := perms.Extensions[principalExt]; got != want {
			s.log.Info("ssh: ProxyJump login as another principal", "conn", c.jump.outer.id, "principal", want, "certificate", got)
			return nil, errors.New("ssh: the certificate is not for the user of the ProxyJump connection")
		}
		return perms, nil
	}
	return cfg
}

// chanConn is an SSH channel as a net.Conn, for a nested connection.
// Deadlines are coarse: SetDeadline (and the read and write variants,
// which set the same one) closes the channel when it passes. Close does
// not wait: the close message goes out on the outer connection's writer
// in its own goroutine, which ends once sent or once that connection
// ends.
type chanConn struct {
	ch            gossh.Channel
	local, remote net.Addr
	closeOnce     sync.Once

	// mu protects the following.
	mu    sync.Mutex
	timer *time.Timer
}

func (c *chanConn) Read(p []byte) (int, error)  { return c.ch.Read(p) }
func (c *chanConn) Write(p []byte) (int, error) { return c.ch.Write(p) }
func (c *chanConn) LocalAddr() net.Addr         { return c.local }

// RemoteAddr is the outer connection's client address.
func (c *chanConn) RemoteAddr() net.Addr { return c.remote }

func (c *chanConn) Close() error {
	c.closeOnce.Do(func() {
		c.SetDeadline(time.Time{})
		go c.ch.Close()
	})
	return nil
}

func (c *chanConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if !t.IsZero() {
		c.timer = time.AfterFunc(time.Until(t), func() { c.Close() })
	}
	return nil
}

func (c *chanConn) SetReadDeadline(t time.Time) error  { return c.SetDeadline(t) }
func (c *chanConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }
