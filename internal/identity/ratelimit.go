package identity

import (
	"net/netip"
	"sync"
	"time"
)

// maxBuckets bounds the memory of a sourceLimiter. Past it, full buckets
// (sources with no recent failures) are dropped; if that is not enough,
// new sources go untracked until it is (the per-name lockout still holds).
const maxBuckets = 100_000

// sourceLimiter is a token bucket of failed logins per source. A source
// may fail burst times in a row, then regains rate attempts per second.
// It lives in memory, per process.
type sourceLimiter struct {
	rate  float64
	burst float64

	// mu protects buckets.
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newSourceLimiter(rate float64, burst int) *sourceLimiter {
	return &sourceLimiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// sourceKey names the bucket of addr: an IPv4 address, or the /64 of an
// IPv6 one (one host usually holds a whole /64). An invalid address (the
// source is unknown) shares one bucket.
func sourceKey(addr netip.Addr) string {
	addr = addr.Unmap()
	switch {
	case !addr.IsValid():
		return "unknown"
	case addr.Is6():
		p, _ := addr.WithZone("").Prefix(64)
		return p.String()
	}
	return addr.String()
}

// refill brings b up to date at now. l.mu is held.
func (l *sourceLimiter) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt*l.rate)
	}
	b.last = now
}

// allowed reports whether src may attempt a login at now.
func (l *sourceLimiter) allowed(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[sourceKey(src)]
	if !ok {
		return true
	}
	l.refill(b, now)
	return b.tokens >= 1
}

// fail records a failed login from src at now and reports whether src has
// just used its last attempt.
func (l *sourceLimiter) fail(src netip.Addr, now time.Time) (exhausted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := sourceKey(src)
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.pruneLocked(now)
			if len(l.buckets) >= maxBuckets {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	b.tokens = max(0, b.tokens-1)
	return b.tokens < 1
}

// pruneLocked drops the buckets that have refilled. l.mu is held.
func (l *sourceLimiter) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
}
