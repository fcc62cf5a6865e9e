package postgres

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelKey is the BackendKeyData the gateway gives a client: random, so
// the server's process id and secret never reach the client.
type cancelKey struct {
	pid    uint32
	secret [4]byte
}

// cancelTarget is where a cancel request for a client's key goes.
type cancelTarget struct {
	addr   string // host:port of the server
	pid    uint32
	secret []byte
}

// cancelKeys maps the keys given to clients to their servers' keys.
type cancelKeys struct {
	// mu protects m.
	mu sync.Mutex
	m  map[cancelKey]cancelTarget
}

// add registers t under a fresh random key and returns the key.
func (k *cancelKeys) add(t cancelTarget) cancelKey {
	var b [8]byte
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		rand.Read(b[:])
		key := cancelKey{pid: binary.BigEndian.Uint32(b[:4]) &^ (1 << 31)} // positive, as psql prints it
		copy(key.secret[:], b[4:])
		if _, dup := k.m[key]; !dup && key.pid != 0 {
			k.m[key] = t
			return key
		}
	}
}

func (k *cancelKeys) remove(key cancelKey) {
	k.mu.Lock()
	delete(k.m, key)
	k.mu.Unlock()
}

func (k *cancelKeys) lookup(pid uint32, secret []byte) (cancelTarget, bool) {
	if len(secret) != 4 {
		return cancelTarget{}, false
	}
	key := cancelKey{pid: pid}
	copy(key.secret[:], secret)
	k.mu.Lock()
	t, ok := k.m[key]
	k.mu.Unlock()
	// The map lookup compares in variable time; confirm in constant time
	// so a hit says nothing more than the lookup did.
	return t, ok && subtle.ConstantTimeCompare(key.secret[:], secret) == 1
}

// cancelFromClient forwards a client's CancelRequest to the server of the
// session that holds its key; an unknown key is ignored, as the server
// does.
func (s *Server) cancelFromClient(cr *pgproto3.CancelRequest) {
	if t, ok := s.keys.lookup(cr.ProcessID, cr.SecretKey); ok {
		s.cancelUpstream(t)
	}
}

// cancelUpstream sends a CancelRequest for t's backend and waits for the
// server to close the connection (it has then delivered the signal).
func (s *Server) cancelUpstream(t cancelTarget) {
	ctx, cancel := context.WithTimeout(context.Background(), s.dial)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		s.log.Warn("postgres gateway: cancel request", "err", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.dial))
	msg, err := (&pgproto3.CancelRequest{ProcessID: t.pid, SecretKey: t.secret}).Encode(nil)
	if err != nil {
		return
	}
	if _, err := c.Write(msg); err != nil {
		s.log.Warn("postgres gateway: cancel request", "err", err)
		return
	}
	io.Copy(io.Discard, c)
}
