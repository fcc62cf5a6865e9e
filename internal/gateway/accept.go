package gateway

import (
	"errors"
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
