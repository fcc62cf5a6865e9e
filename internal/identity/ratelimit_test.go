package identity

import (
	"net/netip"
	"testing"
	"time"
)

// TestSourceLimiterEvicts checks that a full limiter makes room for a new
// source by forgetting the least recently used one, rather than not
// tracking the new one.
func TestSourceLimiterEvicts(t *testing.T) {
	l := newSourceLimiter(1.0/3600, 2)
	l.max = 3
	now := time.Unix(0, 0)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }
	exhaust := func(i int) {
		t.Helper()
		for range 2 {
			if ok, _ := l.take(addr(i), now); !ok {
				t.Fatalf("source %d refused early", i)
			}
		}
		if ok, _ := l.take(addr(i), now); ok {
			t.Fatalf("source %d not limited", i)
		}
	}
	exhaust(1)
	exhaust(2)
	exhaust(3)
	l.take(addr(1), now) // 1 is used again: 2 is now the least recent
	exhaust(4)           // evicts 2
	if len(l.buckets) != 3 || l.lru.Len() != 3 {
		t.Errorf("%d buckets (%d in LRU order), want 3", len(l.buckets), l.lru.Len())
	}
	// 2 last: taking for it makes room again.
	for _, tt := range []struct {
		i    int
		want bool
	}{{1, false}, {3, false}, {4, false}, {2, true}} {
		if ok, _ := l.take(addr(tt.i), now); ok != tt.want {
			t.Errorf("source %d allowed = %v, want %v", tt.i, ok, tt.want)
		}
	}
}

func TestSourceLimiterBounded(t *testing.T) {
	l := newSourceLimiter(1, 2)
	now := time.Unix(0, 0)
	for i := range maxBuckets + 10 {
		l.take(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if len(l.buckets) != maxBuckets || l.lru.Len() != maxBuckets {
		t.Errorf("%d buckets (%d in LRU order), want %d", len(l.buckets), l.lru.Len(), maxBuckets)
	}
	// A refund that fills a bucket forgets it.
	src := netip.MustParseAddr("192.0.2.1")
	l.take(src, now)
	l.refund(src, now)
	if _, ok := l.buckets[sourceKey(src)]; ok {
		t.Errorf("a full bucket is kept after a refund")
	}
}
