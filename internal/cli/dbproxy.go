package cli

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/warderhq/warder/internal/pki"
)

// PostgreSQL startup-phase request codes.
const (
	pgSSLRequest    = 80877103
	pgGSSEncRequest = 80877104
	pgCancelRequest = 80877102
	pgMaxStartup    = 10000
)

// dbProxyConfig configures a dbProxy.
type dbProxyConfig struct {
	// Gateway is the database gateway's host:port. Required.
	Gateway string
	// ServerName is the name the gateway's certificate must hold.
	ServerName string
	// CAFile is the CA the gateway's certificate must chain to. "": the
	// system roots.
	CAFile string
	// User is the startup user name sent for every client: ACCOUNT@TARGET
	// or TARGET. Required.
	User string
	// Cert returns the client certificate, for each connection (so that
	// one renewed meanwhile is used). Required.
	Cert func(ctx context.Context) (*tls.Certificate, error)
	// Timeout bounds a client's startup and the gateway's dial and TLS
	// handshake. Zero: 30 seconds.
	Timeout time.Duration
}

// dbProxy is the local end of `warder db proxy`: it answers a client's
// SSLRequest with "N" (the client speaks plaintext to 127.0.0.1 only),
// reads its startup packet, dials the gateway with TLS and the client
// certificate, sends the startup with the tunnel's user name and the
// client's database, and then relays bytes both ways untouched. A
// CancelRequest is forwarded to the gateway, which routes it.
type dbProxy struct {
	cfg dbProxyConfig
	tls *tls.Config // trust and server name; the certificate is added per dial

	wg sync.WaitGroup // one per accepted connection

	// mu protects conns: the open client and gateway connections, closed
	// when serve's context ends (and then set to nil).
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newDBProxy(cfg dbProxyConfig) (*dbProxy, error) {
	if cfg.Gateway == "" || cfg.User == "" || cfg.Cert == nil {
		return nil, errors.New("proxy: incomplete configuration")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	tc, err := pki.ClientTLSConfig(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	tc.ServerName = cfg.ServerName
	return &dbProxy{cfg: cfg, tls: tc, conns: map[net.Conn]struct{}{}}, nil
}

// serve accepts connections on ln until ctx ends, then closes ln and
// every connection and waits for their goroutines.
func (p *dbProxy) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.conns = nil // track refuses from now on
		p.mu.Unlock()
	})
	defer stop()
	var err error
	for {
		var c net.Conn
		if c, err = ln.Accept(); err != nil {
			break
		}
		if !p.track(c) {
			c.Close()
			break
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.handle(ctx, c)
		}()
	}
	ln.Close()
	p.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("proxy: accept: %w", err)
}

// track registers c; false once ctx has ended (AfterFunc closed the rest).
func (p *dbProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *dbProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// handle carries one client connection.
func (p *dbProxy) handle(ctx context.Context, c net.Conn) {
	c.SetDeadline(time.Now().Add(p.cfg.Timeout))
	sm, cancelReq, err := readStartup(c)
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			pgFatal(c, "08P01", "warder db proxy: "+err.Error())
		}
		return
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	up, err := p.dial(dctx)
	cancel()
	if err != nil {
		if sm != nil {
			pgFatal(c, "08006", "warder db proxy: cannot reach the database gateway: "+err.Error())
		}
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	if cancelReq != nil {
		// The gateway forwards it and closes the connection.
		up.SetDeadline(time.Now().Add(p.cfg.Timeout))
		if _, err := up.Write(cancelReq); err == nil {
			io.Copy(io.Discard, up)
		}
		return
	}
	if db := sm.Parameters["database"]; db == "" || db == sm.Parameters["user"] {
		delete(sm.Parameters, "database") // libpq's default, not a choice: the gateway uses the target's
	}
	sm.Parameters["user"] = p.cfg.User
	out, err := sm.Encode(nil)
	if err != nil {
		pgFatal(c, "08P01", "warder db proxy: invalid startup packet")
		return
	}
	if _, err := up.Write(out); err != nil {
		pgFatal(c, "08006", "warder db proxy: the database gateway closed the connection")
		return
	}
	c.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})
	errc := make(chan error, 2)
	go func() { _, err := io.Copy(up, c); errc <- err }()
	go func() { _, err := io.Copy(c, up); errc <- err }()
	<-errc
	c.Close()
	up.Close()
	<-errc
}

// dial connects to the gateway: SSLRequest, then TLS with the client
// certificate.
func (p *dbProxy) dial(ctx context.Context) (net.Conn, error) {
	cert, err := p.cfg.Cert(ctx)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", p.cfg.Gateway)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	var req [8]byte
	binary.BigEndian.PutUint32(req[:4], 8)
	binary.BigEndian.PutUint32(req[4:], pgSSLRequest)
	var answer [1]byte
	if _, err := raw.Write(req[:]); err != nil {
		raw.Close()
		return nil, err
	}
	if _, err := io.ReadFull(raw, answer[:]); err != nil {
		raw.Close()
		return nil, err
	}
	if answer[0] != 'S' {
		raw.Close()
		return nil, errors.New("the gateway refused TLS")
	}
	tc := p.tls.Clone()
	tc.Certificates = []tls.Certificate{*cert}
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return conn, nil
}

// readStartup reads a client's first packets, answering SSLRequest and
// GSSENCRequest with "N", until its StartupMessage or CancelRequest (the
// raw packet). Both are nil with the error when the client breaks the
// protocol.
func readStartup(c net.Conn) (*pgproto3.StartupMessage, []byte, error) {
	for range 3 { // SSLRequest, GSSENCRequest, then the startup
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, nil, err
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n < 8 || n > pgMaxStartup {
			return nil, nil, fmt.Errorf("startup packet length %d out of range", n)
		}
		pkt := make([]byte, n)
		copy(pkt, hdr[:])
		if _, err := io.ReadFull(c, pkt[4:]); err != nil {
			return nil, nil, err
		}
		switch code := binary.BigEndian.Uint32(pkt[4:8]); code {
		case pgSSLRequest, pgGSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
		case pgCancelRequest:
			return nil, pkt, nil
		default:
			if code>>16 != 3 {
				return nil, nil, fmt.Errorf("unsupported frontend protocol %d.%d", code>>16, code&0xffff)
			}
			var sm pgproto3.StartupMessage
			if err := sm.Decode(pkt[4:]); err != nil {
				return nil, nil, errors.New("invalid startup packet")
			}
			return &sm, nil, nil
		}
	}
	return nil, nil, errors.New("too many startup requests")
}

// pgFatal sends the client a FATAL error, best effort.
func pgFatal(c net.Conn, code, msg string) {
	b, err := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}).Encode(nil)
	if err != nil {
		return
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(b)
}
