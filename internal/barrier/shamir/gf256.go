package shamir

// Arithmetic in GF(2^8) with the AES reduction polynomial
// x^8 + x^4 + x^3 + x + 1 (0x11b). Addition and subtraction are XOR.
//
// Multiplication and inversion run in time independent of their operands:
// they use no table lookups and no branches on data, so share bytes and
// secret bytes do not leak through cache or branch timing.

// mul returns a·b in GF(2^8).
func mul(a, b byte) byte {
	var p byte
	for i := 0; i < 8; i++ {
		p ^= -(b & 1) & a // add a when the low bit of b is set
		carry := a >> 7
		a <<= 1
		a ^= -carry & 0x1b // reduce when a overflowed x^7
		b >>= 1
	}
	return p
}

// inv returns the multiplicative inverse of a, computed as a^254 (a^255 = 1
// for every non-zero a). inv(0) is 0.
func inv(a byte) byte {
	// 254 = 0b11111110: square-and-multiply with a fixed sequence.
	a2 := mul(a, a)    // a^2
	a4 := mul(a2, a2)  // a^4
	r := mul(a4, a2)   // a^6
	a8 := mul(a4, a4)  // a^8
	r = mul(r, a8)     // a^14
	a16 := mul(a8, a8) // a^16
	r = mul(r, a16)    // a^30
	a32 := mul(a16, a16)
	r = mul(r, a32) // a^62
	a64 := mul(a32, a32)
	r = mul(r, a64) // a^126
	a128 := mul(a64, a64)
	return mul(r, a128) // a^254
}

// div returns a/b; b must not be zero.
func div(a, b byte) byte { return mul(a, inv(b)) }
