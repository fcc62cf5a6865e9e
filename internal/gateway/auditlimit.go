package gateway

import (
	"sync"
	"time"
)

// Bounds on the audit events of unauthenticated failures (garbage
// handshakes, wrong tokens): they cost an attacker nothing, a durable
// audit event does.
const (
	AuditBurst  = 60 // events per AuditWindow
	AuditWindow = time.Minute
)

// AuditLimit limits audit events to AuditBurst per AuditWindow; the
// events dropped are counted in the next one written ("suppressed"). The
// zero value is ready; it is safe for concurrent use.
type AuditLimit struct {
	// mu protects the following.
	mu         sync.Mutex
	window     time.Time // start of the current window
	n          int       // events written in it
	suppressed int       // events dropped since the last one written
}

// Admit reports whether an event may be written now and, if so, how many
// were suppressed before it.
func (h *AuditLimit) Admit(now time.Time) (ok bool, suppressed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.window) >= AuditWindow {
		h.window, h.n = now, 0
	}
	if h.n >= AuditBurst {
		h.suppressed++
		return false, 0
	}
	h.n++
	suppressed, h.suppressed = h.suppressed, 0
	return true, suppressed
}
