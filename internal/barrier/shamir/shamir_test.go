package shamir

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

// refMul is a textbook carry-less multiply followed by reduction modulo
// 0x11b, written independently of mul.
func refMul(a, b byte) byte {
	var p uint16
	for i := 0; i < 8; i++ {
		if b&(1<<i) != 0 {
			p ^= uint16(a) << i
		}
	}
	for i := 15; i >= 8; i-- {
		if p&(1<<i) != 0 {
			p ^= 0x11b << (i - 8)
		}
	}
	return byte(p)
}

func TestMulMatchesReference(t *testing.T) {
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			if got, want := mul(byte(a), byte(b)), refMul(byte(a), byte(b)); got != want {
				t.Fatalf("mul(%#x, %#x) = %#x, want %#x", a, b, got, want)
			}
		}
	}
}

func TestKnownProducts(t *testing.T) {
	// Examples from FIPS-197 section 4.2.
	tests := []struct{ a, b, want byte }{
		{0x57, 0x83, 0xc1},
		{0x57, 0x13, 0xfe},
		{0x53, 0xca, 0x01},
		{0x00, 0xff, 0x00},
		{0x01, 0xab, 0xab},
	}
	for _, tt := range tests {
		if got := mul(tt.a, tt.b); got != tt.want {
			t.Errorf("mul(%#x, %#x) = %#x, want %#x", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestFieldAxioms(t *testing.T) {
	if inv(0) != 0 {
		t.Errorf("inv(0) = %#x, want 0", inv(0))
	}
	for a := 1; a < 256; a++ {
		if p := mul(byte(a), inv(byte(a))); p != 1 {
			t.Fatalf("a·inv(a) = %#x for a = %#x, want 1", p, a)
		}
	}
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			if mul(byte(a), byte(b)) != mul(byte(b), byte(a)) {
				t.Fatalf("mul not commutative at %#x, %#x", a, b)
			}
			if b != 0 && mul(div(byte(a), byte(b)), byte(b)) != byte(a) {
				t.Fatalf("div(%#x, %#x)·%#x != %#x", a, b, b, a)
			}
		}
	}
	// Associativity and distributivity over a sample (all triples is 16M).
	for a := 0; a < 256; a += 7 {
		for b := 0; b < 256; b += 5 {
			for c := 0; c < 256; c += 3 {
				x, y, z := byte(a), byte(b), byte(c)
				if mul(mul(x, y), z) != mul(x, mul(y, z)) {
					t.Fatalf("mul not associative at %#x, %#x, %#x", a, b, c)
				}
				if mul(x, y^z) != mul(x, y)^mul(x, z) {
					t.Fatalf("mul not distributive at %#x, %#x, %#x", a, b, c)
				}
			}
		}
	}
}

// subsets calls f with every subset of {0..n-1} of size k.
func subsets(n, k int, f func([]int)) {
	idx := make([]int, k)
	var rec func(start, depth int)
	rec = func(start, depth int) {
		if depth == k {
			f(idx)
			return
		}
		for i := start; i < n; i++ {
			idx[depth] = i
			rec(i+1, depth+1)
		}
	}
	rec(0, 0)
}

func TestRoundTripAllSubsets(t *testing.T) {
	for n := 2; n <= 6; n++ {
		for k := 2; k <= n; k++ {
			secret := make([]byte, 32)
			rand.Read(secret)
			shares, err := Split(secret, n, k)
			if err != nil {
				t.Fatalf("Split(n=%d, k=%d): %v", n, k, err)
			}
			for size := k; size <= n; size++ {
				subsets(n, size, func(idx []int) {
					var sub [][]byte
					for _, i := range idx {
						sub = append(sub, shares[i])
					}
					got, err := Combine(sub)
					if err != nil {
						t.Fatalf("Combine(n=%d, k=%d, %v): %v", n, k, idx, err)
					}
					if !bytes.Equal(got, secret) {
						t.Fatalf("Combine(n=%d, k=%d, %v) gave a wrong secret", n, k, idx)
					}
				})
			}
			// Fewer than k shares must not give the secret back.
			if k > 2 {
				subsets(n, k-1, func(idx []int) {
					var sub [][]byte
					for _, i := range idx {
						sub = append(sub, shares[i])
					}
					got, err := Combine(sub)
					if err != nil {
						t.Fatalf("Combine(n=%d, k=%d, %v): %v", n, k, idx, err)
					}
					if bytes.Equal(got, secret) {
						t.Fatalf("Combine of %d < %d shares gave the secret", k-1, k)
					}
				})
			}
		}
	}
}

func TestRoundTripLargeParts(t *testing.T) {
	secret := []byte("a secret of some length, not a multiple of anything")
	shares, err := Split(secret, 255, 200)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Combine(shares[55:])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatal("Combine of 200 of 255 shares gave a wrong secret")
	}
}

// TestTooFewSharesLookRandom checks statistically that k-1 shares say
// nothing about a one-byte secret: the value they combine to is close to
// uniform and matches the secret about 1 time in 256.
func TestTooFewSharesLookRandom(t *testing.T) {
	const trials = 256 * 40
	secret := []byte{0x42}
	var counts [256]int
	for i := 0; i < trials; i++ {
		shares, err := Split(secret, 5, 3)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Combine(shares[1:3])
		if err != nil {
			t.Fatal(err)
		}
		counts[got[0]]++
	}
	if c := counts[0x42]; c > 100 {
		t.Errorf("2 of a 3-of-5 split gave the secret %d times in %d, want about 40", c, trials)
	}
	distinct := 0
	for _, c := range counts {
		if c > 0 {
			distinct++
		}
		if c > 100 {
			t.Errorf("one value came out %d times in %d, want about 40", c, trials)
			break
		}
	}
	if distinct < 250 {
		t.Errorf("only %d distinct values came out of %d trials", distinct, trials)
	}
}

func TestSplitErrors(t *testing.T) {
	tests := []struct {
		name             string
		secret           []byte
		parts, threshold int
	}{
		{"empty secret", nil, 3, 2},
		{"threshold 1", []byte("s"), 3, 1},
		{"threshold 0", []byte("s"), 3, 0},
		{"threshold above parts", []byte("s"), 3, 4},
		{"too many parts", []byte("s"), 256, 2},
		{"negative parts", []byte("s"), -1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Split(tt.secret, tt.parts, tt.threshold)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Split: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestCombineErrors(t *testing.T) {
	good, err := Split([]byte("secret"), 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	zeroX := bytes.Clone(good[1])
	zeroX[len(zeroX)-1] = 0
	tests := []struct {
		name   string
		shares [][]byte
	}{
		{"none", nil},
		{"one", good[:1]},
		{"different lengths", [][]byte{good[0], good[1][1:]}},
		{"duplicate x", [][]byte{good[0], good[0]}},
		{"zero x", [][]byte{good[0], zeroX}},
		{"too short", [][]byte{{1}, {2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Combine(tt.shares)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Combine: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestSharesDifferAcrossSplits(t *testing.T) {
	secret := []byte("same secret")
	a, _ := Split(secret, 3, 2)
	b, _ := Split(secret, 3, 2)
	if bytes.Equal(a[0], b[0]) {
		t.Fatal("two splits of one secret gave the same share: coefficients are not random")
	}
}

func BenchmarkSplit(b *testing.B) {
	secret := make([]byte, 32)
	for b.Loop() {
		Split(secret, 5, 3)
	}
}
