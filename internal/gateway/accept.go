package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Backoff is the pause between failed Accepts of a gateway's listener.
type Backoff struct{ delay time.Duration }

// Retry reports whether a gateway should accept again after err, sleeping
// first (5 ms, doubling to at most 1 s): every error but a closed listener
// is retried, so running out of file descriptors (EMFILE, ENFILE) or a
// transient network error pauses the gateway instead of stopping it and
// its live sessions. Reset after a successful Accept.
func (b *Backoff) Retry(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	time.Sleep(b.delay)
	return true
}

// Reset is called after a successful Accept.
func (b *Backoff) Reset() { b.delay = 0 }

// Accept accepts connections on ln and hands each to serve, until ln
// fails for good: it returns errClosed when closed reports the gateway
// closed, else the Accept error, prefixed with name. Other errors are
// retried with Backoff and logged. serve returning false stops the loop
// with errClosed (the gateway closed while the connection was accepted);
// serve owns the connection either way.
func Accept(ln net.Listener, name string, log *slog.Logger, closed func() bool, errClosed error, serve func(net.Conn) bool) error {
	var b Backoff
	for {
		c, err := ln.Accept()
		if err != nil {
			if closed() {
				return errClosed
			}
			if b.Retry(err) {
				log.Warn(name+": accept", "err", err)
				continue
			}
			return fmt.Errorf("%s: accept: %w", name, err)
		}
		b.Reset()
		if !serve(c) {
			return errClosed
		}
	}
}
