package vault

import (
	"crypto/rand"
	"encoding/binary"
	"strings"

	"github.com/warderhq/warder/internal/errkind"
)

// The character classes of generated passwords.
const (
	lowerChars  = "abcdefghijklmnopqrstuvwxyz"
	upperChars  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digitChars  = "0123456789"
	symbolChars = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
)

// Bounds and default of PasswordPolicy.Length.
const (
	MinPasswordLength     = 12
	MaxPasswordLength     = 128
	DefaultPasswordLength = 32
)

// PasswordPolicy says what passwords the rotation engine generates for an
// account. The zero value is the default policy.
type PasswordPolicy struct {
	// Length in characters. Zero: 32. Otherwise 12 to 128.
	Length int `json:"length"`
	// The character classes used; each one used appears at least once.
	// All four false means all four true.
	Lower   bool `json:"lower"`
	Upper   bool `json:"upper"`
	Digits  bool `json:"digits"`
	Symbols bool `json:"symbols"`
	// Forbidden lists characters the target cannot take; they never
	// appear.
	Forbidden string `json:"forbidden,omitempty"`
}

// DefaultPasswordPolicy is 32 characters of all four classes.
func DefaultPasswordPolicy() PasswordPolicy {
	return PasswordPolicy{Length: DefaultPasswordLength, Lower: true, Upper: true, Digits: true, Symbols: true}
}

// normal returns p with its defaults filled in.
func (p PasswordPolicy) normal() PasswordPolicy {
	if p.Length == 0 {
		p.Length = DefaultPasswordLength
	}
	if !p.Lower && !p.Upper && !p.Digits && !p.Symbols {
		p.Lower, p.Upper, p.Digits, p.Symbols = true, true, true, true
	}
	return p
}

// classes returns the alphabets of p's classes, without forbidden
// characters, or an error if p cannot generate a password.
func (p PasswordPolicy) classes() ([]string, error) {
	p = p.normal()
	if p.Length < MinPasswordLength || p.Length > MaxPasswordLength {
		return nil, errkind.New(errkind.Invalid, "vault: password length %d is not between %d and %d", p.Length, MinPasswordLength, MaxPasswordLength)
	}
	if len(p.Forbidden) > 256 {
		return nil, errkind.New(errkind.Invalid, "vault: more than 256 forbidden characters")
	}
	var out []string
	for _, c := range []struct {
		on    bool
		name  string
		chars string
	}{{p.Lower, "lower-case", lowerChars}, {p.Upper, "upper-case", upperChars}, {p.Digits, "digit", digitChars}, {p.Symbols, "symbol", symbolChars}} {
		if !c.on {
			continue
		}
		alpha := strings.Map(func(r rune) rune {
			if strings.ContainsRune(p.Forbidden, r) {
				return -1
			}
			return r
		}, c.chars)
		if alpha == "" {
			return nil, errkind.New(errkind.Invalid, "vault: the password policy forbids every %s character", c.name)
		}
		out = append(out, alpha)
	}
	return out, nil
}

// Validate reports whether p can generate passwords.
func (p PasswordPolicy) Validate() error {
	_, err := p.classes()
	return err
}

// Generate returns a new random password following p. Each character
// comes from crypto/rand without modulo bias: one of each class, the rest
// uniformly from the union of the classes, in a uniformly random order.
// The caller clears the result when done with it.
func (p PasswordPolicy) Generate() ([]byte, error) {
	cls, err := p.classes()
	if err != nil {
		return nil, err
	}
	n := p.normal().Length
	all := strings.Join(cls, "")
	out := make([]byte, n)
	r := newRandSource()
	for i := range out {
		alpha := all
		if i < len(cls) {
			alpha = cls[i]
		}
		k, err := r.intn(len(alpha))
		if err != nil {
			clear(out)
			return nil, err
		}
		out[i] = alpha[k]
	}
	// Fisher–Yates, so the required characters sit anywhere.
	for i := n - 1; i > 0; i-- {
		j, err := r.intn(i + 1)
		if err != nil {
			clear(out)
			return nil, err
		}
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// randSource draws uniform integers from crypto/rand by rejection
// sampling.
type randSource struct {
	buf [256]byte
	off int
}

func newRandSource() *randSource { return &randSource{off: 256} }

func (r *randSource) uint32() (uint32, error) {
	if r.off+4 > len(r.buf) {
		if _, err := rand.Read(r.buf[:]); err != nil {
			return 0, errkind.New(errkind.Other, "vault: read random: %w", err)
		}
		r.off = 0
	}
	x := binary.BigEndian.Uint32(r.buf[r.off:])
	r.off += 4
	return x, nil
}

// intn returns a uniform integer in [0, n), 0 < n < 2^31.
func (r *randSource) intn(n int) (int, error) {
	// Reject the top partial range so every residue is equally likely.
	limit := uint32((1 << 32) - (1<<32)%uint64(n) - 1)
	for {
		x, err := r.uint32()
		if err != nil {
			return 0, err
		}
		if x <= limit {
			return int(x % uint32(n)), nil
		}
	}
}
