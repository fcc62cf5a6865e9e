// Package shamir implements Shamir's secret sharing over GF(2^8).
//
// Split cuts a secret into parts shares such that any threshold of them
// rebuild it with Combine and fewer reveal nothing about it: every byte of
// the secret is the constant term of its own random polynomial of degree
// threshold-1, with coefficients drawn from crypto/rand.
//
// A share is the polynomial values (one byte per secret byte) followed by
// one byte holding the x coordinate, which is never zero. Shares carry no
// integrity check: Combine of the wrong shares returns a wrong secret
// without error, so callers must verify the result (the barrier does, by
// decrypting its root key with it).
package shamir

import (
	"crypto/rand"
	"errors"
	"fmt"
)

// MaxParts is the largest number of shares: x coordinates are the non-zero
// elements of GF(2^8).
const MaxParts = 255

// ErrInvalid is wrapped by every error about bad arguments or bad shares.
var ErrInvalid = errors.New("shamir: invalid input")

// Split divides secret into parts shares, any threshold of which rebuild it.
// It requires a non-empty secret and 2 <= threshold <= parts <= 255. Share
// i (0-based) has x coordinate i+1. Each share is len(secret)+1 bytes long.
func Split(secret []byte, parts, threshold int) ([][]byte, error) {
	switch {
	case len(secret) == 0:
		return nil, fmt.Errorf("shamir: empty secret: %w", ErrInvalid)
	case threshold < 2:
		return nil, fmt.Errorf("shamir: threshold %d is below 2: %w", threshold, ErrInvalid)
	case parts < threshold:
		return nil, fmt.Errorf("shamir: %d parts is fewer than the threshold %d: %w", parts, threshold, ErrInvalid)
	case parts > MaxParts:
		return nil, fmt.Errorf("shamir: %d parts is more than %d: %w", parts, MaxParts, ErrInvalid)
	}

	shares := make([][]byte, parts)
	for i := range shares {
		shares[i] = make([]byte, len(secret)+1)
		shares[i][len(secret)] = byte(i + 1)
	}
	// coeffs[0] is the secret byte; coeffs[1:] are random.
	coeffs := make([]byte, threshold)
	defer clear(coeffs)
	for j, s := range secret {
		coeffs[0] = s
		if _, err := rand.Read(coeffs[1:]); err != nil {
			return nil, fmt.Errorf("shamir: read random coefficients: %w", err)
		}
		for _, sh := range shares {
			sh[j] = eval(coeffs, sh[len(secret)])
		}
	}
	return shares, nil
}

// eval evaluates the polynomial with the given coefficients (lowest degree
// first) at x, by Horner's rule.
func eval(coeffs []byte, x byte) byte {
	var y byte
	for i := len(coeffs) - 1; i >= 0; i-- {
		y = mul(y, x) ^ coeffs[i]
	}
	return y
}

// Combine rebuilds a secret from shares made by Split. It requires at least
// two shares, all of one length (at least two bytes), with distinct non-zero
// x coordinates. Given fewer shares than the threshold, or shares of
// different secrets, it returns a wrong secret and no error.
func Combine(shares [][]byte) ([]byte, error) {
	if len(shares) < 2 {
		return nil, fmt.Errorf("shamir: %d shares given, at least 2 needed: %w", len(shares), ErrInvalid)
	}
	if len(shares) > MaxParts {
		return nil, fmt.Errorf("shamir: %d shares given, at most %d possible: %w", len(shares), MaxParts, ErrInvalid)
	}
	n := len(shares[0])
	if n < 2 {
		return nil, fmt.Errorf("shamir: share is %d bytes, at least 2 needed: %w", n, ErrInvalid)
	}
	xs := make([]byte, len(shares))
	var seen [256]bool
	for i, sh := range shares {
		if len(sh) != n {
			return nil, fmt.Errorf("shamir: shares have different lengths (%d and %d bytes): %w", n, len(sh), ErrInvalid)
		}
		x := sh[n-1]
		if x == 0 {
			return nil, fmt.Errorf("shamir: share %d has x coordinate 0: %w", i+1, ErrInvalid)
		}
		if seen[x] {
			return nil, fmt.Errorf("shamir: two shares have x coordinate %d: %w", x, ErrInvalid)
		}
		seen[x] = true
		xs[i] = x
	}

	// Lagrange basis values at x=0: l_i = prod_{j!=i} x_j / (x_j - x_i).
	basis := make([]byte, len(shares))
	for i := range xs {
		l := byte(1)
		for j := range xs {
			if i != j {
				l = mul(l, div(xs[j], xs[j]^xs[i]))
			}
		}
		basis[i] = l
	}
	secret := make([]byte, n-1)
	for k := range secret {
		var s byte
		for i, sh := range shares {
			s ^= mul(sh[k], basis[i])
		}
		secret[k] = s
	}
	return secret, nil
}
