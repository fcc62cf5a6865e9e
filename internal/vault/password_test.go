package vault

import (
	"math"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/errkind"
)

func TestPasswordPolicyValidate(t *testing.T) {
	for name, p := range map[string]PasswordPolicy{
		"too short":         {Length: 11},
		"too long":          {Length: 129},
		"no digits left":    {Length: 20, Digits: true, Forbidden: digitChars},
		"no lower left":     {Length: 20, Lower: true, Upper: true, Forbidden: lowerChars},
		"forbidden too big": {Forbidden: strings.Repeat("a", 257)},
	} {
		t.Run(name, func(t *testing.T) {
			wantKind(t, "Validate", p.Validate(), errkind.Invalid)
			_, err := p.Generate()
			wantKind(t, "Generate", err, errkind.Invalid)
		})
	}
	if err := (PasswordPolicy{}).Validate(); err != nil {
		t.Errorf("zero policy: %v", err)
	}
}

// TestGenerateClasses: every password has the configured length, a
// character of each class used, no character of another class and no
// forbidden character.
func TestGenerateClasses(t *testing.T) {
	for name, p := range map[string]PasswordPolicy{
		"default":        {},
		"short":          {Length: 12},
		"long":           {Length: 128},
		"digits only":    {Length: 12, Digits: true},
		"no symbols":     {Length: 16, Lower: true, Upper: true, Digits: true},
		"forbid quoting": {Length: 24, Lower: true, Upper: true, Digits: true, Symbols: true, Forbidden: `'"\$` + "`"},
		"few symbols":    {Length: 12, Symbols: true, Lower: true, Forbidden: strings.ReplaceAll(symbolChars, "#", "") + "abcdefghijklmnopqrstuvwxy"},
	} {
		t.Run(name, func(t *testing.T) {
			n := p.normal()
			cls, err := p.classes()
			if err != nil {
				t.Fatal(err)
			}
			allowed := strings.Join(cls, "")
			for range 2000 {
				pw, err := p.Generate()
				if err != nil {
					t.Fatal(err)
				}
				if len(pw) != n.Length {
					t.Fatalf("length %d, want %d", len(pw), n.Length)
				}
				for _, c := range cls {
					if !strings.ContainsAny(string(pw), c) {
						t.Fatalf("%q lacks a character of %q", pw, c)
					}
				}
				for _, r := range string(pw) {
					if !strings.ContainsRune(allowed, r) || strings.ContainsRune(p.Forbidden, r) {
						t.Fatalf("%q holds %q", pw, r)
					}
				}
			}
		})
	}
}

// TestGenerateUniform checks with a chi-squared test that, within each
// class, every character is equally likely, and that the union is drawn
// in proportion to class sizes.
func TestGenerateUniform(t *testing.T) {
	p := PasswordPolicy{Length: 128, Lower: true, Upper: true, Digits: true, Symbols: true, Forbidden: "xyz"}
	cls, _ := p.classes()
	counts := map[byte]int{}
	const rounds = 4000
	for range rounds {
		pw, err := p.Generate()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range pw {
			counts[c]++
		}
	}
	total := 0
	for _, c := range cls {
		sum := 0
		for i := range len(c) {
			sum += counts[c[i]]
		}
		total += sum
		mean := float64(sum) / float64(len(c))
		chi := 0.0
		for i := range len(c) {
			d := float64(counts[c[i]]) - mean
			chi += d * d / mean
		}
		df := float64(len(c) - 1)
		// About six standard deviations above the mean of chi-squared.
		if limit := df + 6*math.Sqrt(2*df); chi > limit {
			t.Errorf("class %q: chi-squared %.1f > %.1f: not uniform", c, chi, limit)
		}
	}
	// Class shares: one forced character each, the rest by alphabet size.
	all := len(strings.Join(cls, ""))
	for _, c := range cls {
		sum := 0
		for i := range len(c) {
			sum += counts[c[i]]
		}
		want := rounds * (1 + float64(128-len(cls))*float64(len(c))/float64(all))
		if sd := math.Sqrt(want); math.Abs(float64(sum)-want) > 6*sd {
			t.Errorf("class %q drawn %d times, want about %.0f", c, sum, want)
		}
	}
	if total != rounds*128 {
		t.Errorf("counted %d characters", total)
	}
}

func TestRandIntnBounds(t *testing.T) {
	r := newRandSource()
	for _, n := range []int{1, 2, 3, 10, 94, 1 << 20} {
		for range 1000 {
			k, err := r.intn(n)
			if err != nil || k < 0 || k >= n {
				t.Fatalf("intn(%d) = %d, %v", n, k, err)
			}
		}
	}
}
