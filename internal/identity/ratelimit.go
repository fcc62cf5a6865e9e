package identity

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// maxBuckets bounds the memory of a sourceLimiter. Past it, a new source
// takes the place of the source used least recently, which forgets its
// failures (the per-name lockout still holds): an attacker with many
// addresses can make the limiter forget, but never make it stop counting
// new sources or grow.
const maxBuckets = 100_000

// sourceLimiter is a token bucket of failed logins per source. A source
// may fail burst times in a row, then regains rate attempts per second.
// An attempt takes its token before any secret is checked (take), so that
// concurrent attempts cannot exceed the burst, and gives it back if it
// succeeds (refund). It lives in memory, per process.
type sourceLimiter struct {
	rate  float64
	burst float64
	max   int // buckets kept at most: maxBuckets; tests lower it

	// mu protects buckets and lru.
	mu      sync.Mutex
	buckets map[string]*list.Element // of lru, holding a *bucket
	lru     *list.List               // most recently used first
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
}

func newSourceLimiter(rate float64, burst int) *sourceLimiter {
	return &sourceLimiter{rate: rate, burst: float64(burst), max: maxBuckets,
		buckets: map[string]*list.Element{}, lru: list.New()}
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

// take takes one of src's attempts at now, if it has one left: ok reports
// whether it had, and last whether that was its last one (the source is
// now limited). A failed attempt keeps its token; a successful one gives
// it back with refund.
func (l *sourceLimiter) take(src netip.Addr, now time.Time) (ok, last bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := sourceKey(src)
	var b *bucket
	if el, found := l.buckets[key]; found {
		l.lru.MoveToFront(el)
		b = el.Value.(*bucket)
		l.refill(b, now)
	} else {
		if len(l.buckets) >= l.max {
			oldest := l.lru.Back()
			l.lru.Remove(oldest)
			delete(l.buckets, oldest.Value.(*bucket).key)
		}
		b = &bucket{key: key, tokens: l.burst, last: now}
		l.buckets[key] = l.lru.PushFront(b)
	}
	if b.tokens < 1 {
		return false, false
	}
	b.tokens--
	return true, b.tokens < 1
}

// refund gives back the token an attempt from src took, and forgets the
// source once its bucket is full again.
func (l *sourceLimiter) refund(src netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := sourceKey(src)
	el, ok := l.buckets[key]
	if !ok {
		return // evicted meanwhile: it is full
	}
	b := el.Value.(*bucket)
	l.refill(b, now)
	b.tokens = min(l.burst, b.tokens+1)
	if b.tokens >= l.burst {
		l.lru.Remove(el)
		delete(l.buckets, key)
	}
}
