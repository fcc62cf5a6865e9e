package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// scramSaltLen is the salt length PostgreSQL uses (SCRAM_DEFAULT_SALT_LEN).
const scramSaltLen = 16

// newVerifier returns a SCRAM-SHA-256 verifier for password in the format
// PostgreSQL stores in pg_authid.rolpassword, with a fresh random salt:
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// PostgreSQL stores a value in this format as is, so the password itself
// never reaches the server, its logs or pg_stat_statements.
func newVerifier(password string) (string, error) {
	if err := checkSASLprepStable(password); err != nil {
		return "", err
	}
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("postgres: salt: %w", err)
	}
	return scramVerifier(password, salt, scramIterations)
}

// scramVerifier computes the verifier of RFC 5802 section 3 with SHA-256
// (RFC 7677) for password, salt and iterations.
func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("postgres: PBKDF2: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s",
		iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// checkSASLprepStable returns an error unless SASLprep (RFC 4013), which
// PostgreSQL applies to a password before hashing it and libpq before
// logging in, would leave password unchanged or fail on it (in which case
// both sides fall back to the raw bytes). For such passwords the raw bytes
// are what both sides hash, so the verifier computed here matches what the
// server would have computed. For the others the result would depend on
// Unicode 3.2 tables that clients implement differently (pgx uses PRECIS),
// so they are refused rather than risk a password no client can log in
// with. Generated passwords are ASCII and always pass.
func checkSASLprepStable(password string) error {
	if strings.IndexByte(password, 0) >= 0 {
		return fmt.Errorf("postgres: password contains a NUL byte, which PostgreSQL clients cannot send")
	}
	if !utf8.ValidString(password) {
		return nil // SASLprep fails: raw bytes on both sides
	}
	for _, r := range password {
		if saslprepMapped(r) {
			return fmt.Errorf("postgres: password contains a character SASLprep maps (U+%04X); choose another", r)
		}
	}
	if !norm.NFKC.IsNormalString(password) {
		return fmt.Errorf("postgres: password is not in Unicode NFKC form, which SASLprep would change; choose another")
	}
	return nil
}

// saslprepMapped reports whether SASLprep maps r: RFC 3454 table B.1
// (mapped to nothing) and C.1.2 (non-ASCII space, mapped to U+0020).
func saslprepMapped(r rune) bool {
	switch {
	case r == 0x00AD, r == 0x034F, r == 0x1806, r >= 0x180B && r <= 0x180D,
		r >= 0x200B && r <= 0x200D, r == 0x2060, r >= 0xFE00 && r <= 0xFE0F, r == 0xFEFF:
		return true // B.1
	case r == 0x00A0, r == 0x1680, r >= 0x2000 && r <= 0x200B, r == 0x202F, r == 0x205F, r == 0x3000:
		return true // C.1.2
	}
	return false
}
