package identity

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
)

// TOTP as in RFC 6238: HMAC-SHA1, 6 digits, 30-second steps, accepting
// the step before and after the current one.
const (
	totpPeriod      = 30
	totpDigits      = 6
	totpSecretBytes = 20 // 160 bits, RFC 4226's recommendation
	totpAADKind     = "identity.totp"
	recoveryCount   = 10
	recoveryBytes   = 10 // 80 bits: 16 base32 characters
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// hotp is the RFC 4226 HOTP value of key and counter, as digits decimal
// digits.
func hotp(key []byte, counter uint64, digits int) string {
	m := hmac.New(sha1.New, key)
	m.Write(binary.BigEndian.AppendUint64(nil, counter))
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	mod := uint32(1)
	for range digits {
		mod *= 10
	}
	s := strconv.FormatUint(uint64(v%mod), 10)
	return strings.Repeat("0", digits-len(s)) + s
}

// totpStep is the RFC 6238 time step of t.
func totpStep(t time.Time) int64 { return t.Unix() / totpPeriod }

// parseCode returns code as six ASCII digits, ignoring spaces (authenticator
// apps show "123 456"), or false.
func parseCode(code string) (string, bool) {
	if len(code) > 16 {
		return "", false
	}
	code = strings.ReplaceAll(code, " ", "")
	if len(code) != totpDigits {
		return "", false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return "", false
		}
	}
	return code, true
}

// matchTOTP returns the step of the window around now (one step either
// side) whose code is code, considering only steps after lastStep (codes of
// earlier steps were used or superseded: replays). All three steps are
// compared, in constant time.
func matchTOTP(key []byte, code string, now time.Time, lastStep int64) (int64, bool) {
	code, ok := parseCode(code)
	if !ok {
		return 0, false
	}
	cur := totpStep(now)
	var found int64
	match := 0
	for s := cur - 1; s <= cur+1; s++ {
		eq := subtle.ConstantTimeCompare([]byte(hotp(key, uint64(s), totpDigits)), []byte(code))
		if eq == 1 && s > lastStep && match == 0 {
			found, match = s, 1
		}
	}
	return found, match == 1
}

// spentTOTP reports whether code is the code of a step of the window
// around now that is not after lastStep: a step already used, or passed
// by a later one that was. Such a code is right but is never accepted
// again. All three steps are compared, in constant time.
func spentTOTP(key []byte, code string, now time.Time, lastStep int64) bool {
	code, ok := parseCode(code)
	if !ok {
		return false
	}
	cur := totpStep(now)
	spent := 0
	for s := cur - 1; s <= cur+1; s++ {
		eq := subtle.ConstantTimeCompare([]byte(hotp(key, uint64(s), totpDigits)), []byte(code))
		if eq == 1 && s <= lastStep {
			spent = 1
		}
	}
	return spent == 1
}

// TOTPEnrollment is a pending TOTP enrollment, shown once: the secret for
// an authenticator app, also as an otpauth:// URI (for a QR code).
type TOTPEnrollment struct {
	Secret string `json:"secret"` // base32, unpadded
	URI    string `json:"uri"`
}

// totpAAD binds a TOTP ciphertext to its user and enrollment.
func totpAAD(user string, version int64) barrier.AAD {
	return barrier.AAD{Kind: totpAADKind, ID: user, Version: version}
}

// EnrollTOTP starts (or restarts) a TOTP enrollment for an active user. It
// takes effect once ConfirmTOTP sees a valid code; until then, login does
// not ask for one. A user with a confirmed enrollment is Conflict: an
// administrator must reset it first (DisableTOTP). The secret is stored
// encrypted by the barrier.
func (d *Directory) EnrollTOTP(ctx context.Context, o audit.Origin, user string) (TOTPEnrollment, error) {
	secret := make([]byte, totpSecretBytes)
	rand.Read(secret)
	defer clear(secret)
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := lockUserTx(ctx, d.db, tx, user); err != nil {
			return err
		}
		if err := activeTx(ctx, tx, Principal{KindUser, user}); err != nil {
			return err
		}
		var version int64
		var confirmed bool
		err := tx.QueryRowContext(ctx, `SELECT version, confirmed FROM identity_totp WHERE user_name = $1`, user).Scan(&version, &confirmed)
		if err != nil && !errNoRows(err) {
			return fmt.Errorf("identity: read TOTP enrollment: %w", err)
		}
		if confirmed {
			return errkind.New(errkind.Conflict, "identity: user %q already has TOTP enrolled; an administrator must reset it first", user)
		}
		version++
		ct, err := d.cipher.Encrypt(ctx, totpAAD(user, version), secret)
		if err != nil {
			return fmt.Errorf("identity: encrypt TOTP secret: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO identity_totp (user_name, version, secret_ct, confirmed, last_step)
			VALUES ($1, $2, $3, $4, 0)
			ON CONFLICT (user_name) DO UPDATE SET version = excluded.version, secret_ct = excluded.secret_ct,
				confirmed = excluded.confirmed, last_step = 0`, user, version, ct, false); err != nil {
			return fmt.Errorf("identity: store TOTP enrollment: %w", err)
		}
		return d.appendTx(ctx, tx, o.Event("identity.totp.enroll", "user:"+user, audit.OutcomeSuccess, nil))
	})
	if err != nil {
		return TOTPEnrollment{}, err
	}
	enc := b32.EncodeToString(secret)
	q := url.Values{"secret": {enc}, "issuer": {d.cfg.Issuer}, "algorithm": {"SHA1"},
		"digits": {strconv.Itoa(totpDigits)}, "period": {strconv.Itoa(totpPeriod)}}
	uri := "otpauth://totp/" + url.PathEscape(d.cfg.Issuer) + ":" + url.PathEscape(user) + "?" + q.Encode()
	return TOTPEnrollment{Secret: enc, URI: uri}, nil
}

// totpRow is a user's stored TOTP state, with the secret decrypted.
type totpRow struct {
	version   int64
	secret    []byte // nil: no enrollment
	confirmed bool
	lastStep  int64
}

// readTOTP reads and decrypts user's TOTP state through q (a tx or the DB).
func (d *Directory) readTOTP(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, user string) (totpRow, error) {
	var r totpRow
	var ct []byte
	err := q.QueryRowContext(ctx, `SELECT version, secret_ct, confirmed, last_step FROM identity_totp WHERE user_name = $1`, user).
		Scan(&r.version, &ct, &r.confirmed, &r.lastStep)
	if errNoRows(err) || (err == nil && ct == nil) {
		return totpRow{}, nil
	}
	if err != nil {
		return totpRow{}, fmt.Errorf("identity: read TOTP enrollment: %w", err)
	}
	if r.secret, err = d.cipher.Decrypt(ctx, totpAAD(user, r.version), ct); err != nil {
		return totpRow{}, fmt.Errorf("identity: decrypt TOTP secret: %w", err)
	}
	return r, nil
}

// errBadCode is returned by ConfirmTOTP for a wrong code.
var errBadCode = errkind.New(errkind.Invalid, "identity: the TOTP code is not valid")

// ConfirmTOTP completes a pending enrollment with the first valid code and
// returns recoveryCount single-use recovery codes, shown once and stored
// hashed; each may stand in for a TOTP code at login. No pending enrollment
// is NotFound; a confirmed one, or one replaced or removed while the code
// was checked, Conflict; a wrong code Invalid (audited).
func (d *Directory) ConfirmTOTP(ctx context.Context, o audit.Origin, user, code string) ([]string, error) {
	var codes []string
	var bad bool
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := lockUserTx(ctx, d.db, tx, user); err != nil {
			return err
		}
		r, err := d.readTOTP(ctx, tx, user)
		if err != nil {
			return err
		}
		defer clear(r.secret)
		if d.testConfirmRead != nil {
			d.testConfirmRead(tx)
		}
		switch {
		case r.secret == nil:
			return errkind.New(errkind.NotFound, "identity: user %q has no pending TOTP enrollment", user)
		case r.confirmed:
			return errkind.New(errkind.Conflict, "identity: user %q already has TOTP enrolled", user)
		}
		step, ok := matchTOTP(r.secret, code, d.now(), r.lastStep)
		if !ok {
			bad = true
			return d.appendTx(ctx, tx, o.Event("identity.totp.confirm", "user:"+user, audit.OutcomeFailure,
				map[string]string{"reason": "bad_code"}))
		}
		res, err := tx.ExecContext(ctx, `UPDATE identity_totp SET confirmed = $1, last_step = $2
			WHERE user_name = $3 AND version = $4 AND confirmed = $5 AND secret_ct IS NOT NULL`,
			true, step, user, r.version, false)
		if err != nil {
			return fmt.Errorf("identity: confirm TOTP: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			// Re-enrolled, confirmed or disabled since it was read: the
			// code was for another enrollment, or none.
			return errkind.New(errkind.Conflict, "identity: the TOTP enrollment of user %q changed meanwhile; enroll again", user)
		}
		if codes, err = replaceRecoveryCodesTx(ctx, tx, user); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.totp.confirm", "user:"+user, audit.OutcomeSuccess, nil))
	})
	switch {
	case err != nil:
		return nil, err
	case bad:
		return nil, errBadCode
	}
	return codes, nil
}

// DisableTOTP removes the user's TOTP enrollment (pending or confirmed) and
// recovery codes; none is NotFound. It is the administrator's reset for a
// user who lost their authenticator: they can then log in with their
// password alone and enroll again.
func (d *Directory) DisableTOTP(ctx context.Context, o audit.Origin, user string) error {
	return d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := lockUserTx(ctx, d.db, tx, user); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE identity_totp SET secret_ct = NULL, confirmed = $1, last_step = 0
			WHERE user_name = $2 AND secret_ct IS NOT NULL`, false, user)
		if err != nil {
			return fmt.Errorf("identity: disable TOTP: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "identity: user %q has no TOTP enrollment", user)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM identity_recovery_codes WHERE user_name = $1`, user); err != nil {
			return fmt.Errorf("identity: delete recovery codes: %w", err)
		}
		return d.appendTx(ctx, tx, o.Event("identity.totp.disable", "user:"+user, audit.OutcomeSuccess, nil))
	})
}

// replaceRecoveryCodesTx stores fresh recovery codes for user, dropping
// the old ones, and returns them formatted "xxxx-xxxx-xxxx-xxxx".
func replaceRecoveryCodesTx(ctx context.Context, tx *sql.Tx, user string) ([]string, error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM identity_recovery_codes WHERE user_name = $1`, user); err != nil {
		return nil, fmt.Errorf("identity: delete recovery codes: %w", err)
	}
	codes := make([]string, recoveryCount)
	for i := range codes {
		raw := make([]byte, recoveryBytes)
		rand.Read(raw)
		s := strings.ToLower(b32.EncodeToString(raw))
		codes[i] = s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16]
		h, _ := recoveryHash(codes[i])
		if _, err := tx.ExecContext(ctx, `INSERT INTO identity_recovery_codes (user_name, code_hash) VALUES ($1, $2)`, user, h); err != nil {
			return nil, fmt.Errorf("identity: store recovery code: %w", err)
		}
	}
	return codes, nil
}

// recoveryHash normalises a recovery code (case, dashes and spaces do not
// matter) and returns its SHA-256, or false if it cannot be one.
func recoveryHash(code string) ([]byte, bool) {
	if len(code) > 64 {
		return nil, false
	}
	norm := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
	if raw, err := b32.DecodeString(norm); err != nil || len(raw) != recoveryBytes || b32.EncodeToString(raw) != norm {
		return nil, false
	}
	h := sha256.Sum256([]byte(norm))
	return h[:], true
}

// useRecoveryCodeTx spends one of user's unused recovery codes matching
// code, comparing against each in constant time. It reports whether one
// was spent.
func (d *Directory) useRecoveryCodeTx(ctx context.Context, tx *sql.Tx, user, code string) (bool, error) {
	want, ok := recoveryHash(code)
	if !ok {
		return false, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT code_hash FROM identity_recovery_codes WHERE user_name = $1 AND used_at = 0`, user)
	if err != nil {
		return false, fmt.Errorf("identity: read recovery codes: %w", err)
	}
	var match []byte
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return false, fmt.Errorf("identity: read recovery codes: %w", err)
		}
		if subtle.ConstantTimeCompare(h, want) == 1 {
			match = h
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || match == nil {
		return false, err
	}
	_, nowUS := d.nowMicros()
	res, err := tx.ExecContext(ctx, `UPDATE identity_recovery_codes SET used_at = $1 WHERE user_name = $2 AND code_hash = $3 AND used_at = 0`,
		nowUS, user, match)
	if err != nil {
		return false, fmt.Errorf("identity: spend recovery code: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// Rewrap re-encrypts every TOTP secret under an older data key with b's
// current one and reports how many it changed. It makes *Directory a
// barrier.Rewrapper: register it as barrier.Register("identity.totp", dir).
// A row changed meanwhile (re-enrolled, disabled) is left for the next run.
func (d *Directory) Rewrap(ctx context.Context, b *barrier.Barrier) (int, error) {
	type row struct {
		user    string
		version int64
		ct      []byte
	}
	rows, err := d.db.QueryContext(ctx, `SELECT user_name, version, secret_ct FROM identity_totp WHERE secret_ct IS NOT NULL`)
	if err != nil {
		return 0, fmt.Errorf("identity: rewrap: %w", err)
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.user, &r.version, &r.ct); err != nil {
			rows.Close()
			return 0, fmt.Errorf("identity: rewrap: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("identity: rewrap: %w", err)
	}
	n := 0
	for _, r := range all {
		ct, changed, err := b.Rewrap(ctx, totpAAD(r.user, r.version), r.ct)
		if err != nil {
			return n, fmt.Errorf("identity: rewrap TOTP secret of %q: %w", r.user, err)
		}
		if !changed {
			continue
		}
		res, err := d.db.ExecContext(ctx, `UPDATE identity_totp SET secret_ct = $1 WHERE user_name = $2 AND version = $3 AND secret_ct = $4`,
			ct, r.user, r.version, r.ct)
		if err != nil {
			return n, fmt.Errorf("identity: rewrap TOTP secret of %q: %w", r.user, err)
		}
		if k, _ := res.RowsAffected(); k == 1 {
			n++
		}
	}
	return n, nil
}
