package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/warderhq/warder/internal/errkind"
)

// PasswordParams are the Argon2id cost parameters of a password hash.
type PasswordParams struct {
	Time    uint32 // passes over memory, 1..16
	Memory  uint32 // KiB, 8*Threads..2 GiB
	Threads uint8  // lanes, 1..16
}

// DefaultPasswordParams returns OWASP's first Argon2id recommendation
// (19 MiB, 2 passes, 1 lane): about 30 ms per hash on a server core.
// Directory bounds concurrent hashes to GOMAXPROCS (at least 2) so that a
// login flood cannot make it allocate without limit.
func DefaultPasswordParams() PasswordParams {
	return PasswordParams{Time: 2, Memory: 19 * 1024, Threads: 1}
}

// Password policy and hash shape.
const (
	MinPasswordChars = 12   // characters (Unicode code points; bytes if not UTF-8)
	MaxPasswordBytes = 1024 // bounds the work of hashing
	saltLen          = 16
	keyLen           = 32
	argonVersion     = argon2.Version // 19
)

// check refuses parameters outside the bounds parsePHC accepts.
func (p PasswordParams) check() error {
	if p.Time < 1 || p.Time > 16 || p.Threads < 1 || p.Threads > 16 || p.Memory < 8*uint32(p.Threads) || p.Memory > 2<<20 {
		return errkind.New(errkind.Invalid, "identity: Argon2id parameters out of range (time 1-16, threads 1-16, memory 8*threads KiB to 2 GiB)")
	}
	return nil
}

// checkPassword enforces the password policy: at least MinPasswordChars
// characters and at most MaxPasswordBytes bytes. No composition rules
// (NIST SP 800-63B). The error never repeats the password.
func checkPassword(pw []byte) error {
	if len(pw) > MaxPasswordBytes {
		return errkind.New(errkind.Invalid, "identity: password is longer than %d bytes", MaxPasswordBytes)
	}
	if utf8.RuneCount(pw) < MinPasswordChars {
		return errkind.New(errkind.Invalid, "identity: password must have at least %d characters", MinPasswordChars)
	}
	return nil
}

// phc is a parsed Argon2id PHC string:
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>, salt and hash
// in unpadded standard base64.
type phc struct {
	params PasswordParams
	salt   []byte
	hash   []byte
}

var b64 = base64.RawStdEncoding.Strict()

// String formats h as a PHC string.
func (h phc) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argonVersion,
		h.params.Memory, h.params.Time, h.params.Threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.hash))
}

// parsePHC parses an Argon2id PHC string in its canonical form (the one
// String writes), refusing other algorithms, versions and out-of-range
// parameters. Errors do not repeat the input.
func parsePHC(s string) (phc, error) {
	bad := func(why string) (phc, error) {
		return phc{}, fmt.Errorf("identity: malformed password hash: %s", why)
	}
	if len(s) > 512 {
		return bad("too long")
	}
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return bad("not an $argon2id$ PHC string")
	}
	if f[2] != "v="+strconv.Itoa(argonVersion) {
		return bad("unsupported version")
	}
	kv := strings.Split(f[3], ",")
	if len(kv) != 3 {
		return bad("want parameters m, t, p")
	}
	var vals [3]uint32
	for i, key := range []string{"m=", "t=", "p="} {
		v, ok := strings.CutPrefix(kv[i], key)
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || (len(v) > 1 && v[0] == '0') {
			return bad("bad parameter " + key[:1])
		}
		vals[i] = uint32(n)
	}
	if vals[2] > 255 {
		return bad("bad parameter p")
	}
	h := phc{params: PasswordParams{Memory: vals[0], Time: vals[1], Threads: uint8(vals[2])}}
	if h.params.check() != nil {
		return bad("parameters out of range")
	}
	var err error
	// The decoder skips \r and \n; re-encoding refuses them.
	if h.salt, err = b64.DecodeString(f[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 || b64.EncodeToString(h.salt) != f[4] {
		return bad("bad salt")
	}
	if h.hash, err = b64.DecodeString(f[5]); err != nil || len(h.hash) < 16 || len(h.hash) > 64 || b64.EncodeToString(h.hash) != f[5] {
		return bad("bad hash")
	}
	return h, nil
}

// hashPassword returns the PHC string of pw under p with a fresh salt.
func hashPassword(pw []byte, p PasswordParams) (string, error) {
	h := phc{params: p, salt: make([]byte, saltLen)}
	rand.Read(h.salt)
	h.hash = argon2.IDKey(pw, h.salt, p.Time, p.Memory, p.Threads, keyLen)
	return h.String(), nil
}

// verifyPassword reports whether pw matches the PHC string stored, comparing
// in constant time, and the parameters stored with it.
func verifyPassword(stored string, pw []byte) (bool, PasswordParams, error) {
	h, err := parsePHC(stored)
	if err != nil {
		return false, PasswordParams{}, err
	}
	got := argon2.IDKey(pw, h.salt, h.params.Time, h.params.Memory, h.params.Threads, uint32(len(h.hash)))
	return subtle.ConstantTimeCompare(got, h.hash) == 1, h.params, nil
}

// hashSlot waits for a free Argon2 slot; release gives it back.
func (d *Directory) hashSlot(ctx context.Context) (release func(), err error) {
	select {
	case d.hashSem <- struct{}{}:
		return func() { <-d.hashSem }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("identity: waiting to hash a password: %w", errkind.Wrap(errkind.Unavailable, ctx.Err()))
	}
}

// hash hashes pw under the current parameters, within the concurrency bound.
func (d *Directory) hash(ctx context.Context, pw []byte) (string, error) {
	release, err := d.hashSlot(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	return hashPassword(pw, d.params)
}

// verify checks pw against stored ("" or malformed: against the dummy hash,
// so the work is the same, and false), within the concurrency bound.
// rehash is true when pw matched a hash made with other parameters than the
// current ones.
func (d *Directory) verify(ctx context.Context, stored string, pw []byte) (ok, rehash bool, err error) {
	release, err := d.hashSlot(ctx)
	if err != nil {
		return false, false, err
	}
	defer release()
	real := stored != ""
	if _, perr := parsePHC(stored); perr != nil {
		if real {
			d.logger.ErrorContext(ctx, "identity: stored password hash is malformed", "err", perr)
		}
		real = false
	}
	if !real {
		verifyPassword(d.dummy, pw)
		return false, false, nil
	}
	ok, p, err := verifyPassword(stored, pw)
	if err != nil {
		return false, false, err
	}
	return ok, ok && p != d.params, nil
}
