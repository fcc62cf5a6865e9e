package identity

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// RFC 6238 appendix B, SHA1 column (secret "12345678901234567890").
var rfc6238 = []struct {
	unix int64
	code string
}{
	{59, "94287082"},
	{1111111109, "07081804"},
	{1111111111, "14050471"},
	{1234567890, "89005924"},
	{2000000000, "69279037"},
	{20000000000, "65353130"},
}

func TestTOTPVectors(t *testing.T) {
	key := []byte("12345678901234567890")
	for _, v := range rfc6238 {
		step := uint64(totpStep(time.Unix(v.unix, 0)))
		if got := hotp(key, step, 8); got != v.code {
			t.Errorf("T=%d: 8-digit code %s, want %s", v.unix, got, v.code)
		}
		six := v.code[2:]
		if got := hotp(key, step, totpDigits); got != six {
			t.Errorf("T=%d: 6-digit code %s, want %s", v.unix, got, six)
		}
		if s, ok := matchTOTP(key, six, time.Unix(v.unix, 0), 0); !ok || s != int64(step) {
			t.Errorf("T=%d: matchTOTP = %d, %v", v.unix, s, ok)
		}
	}
}

func TestTOTPWindow(t *testing.T) {
	key := []byte("12345678901234567890")
	now := time.Unix(1111111111, 0)
	cur := totpStep(now)
	code := func(s int64) string { return hotp(key, uint64(s), totpDigits) }
	tests := []struct {
		name string
		code string
		last int64
		ok   bool
	}{
		{"current", code(cur), 0, true},
		{"previous", code(cur - 1), 0, true},
		{"next", code(cur + 1), 0, true},
		{"two back", code(cur - 2), 0, false},
		{"two ahead", code(cur + 2), 0, false},
		{"current, already used", code(cur), cur, false},
		{"previous, after current was used", code(cur - 1), cur, false},
		{"next, after current was used", code(cur + 1), cur, true},
		{"with a space", code(cur)[:3] + " " + code(cur)[3:], 0, true},
		{"letters", "12345a", 0, false},
		{"five digits", code(cur)[:5], 0, false},
		{"seven digits", code(cur) + "0", 0, false},
		{"fullwidth digits", "１２３４５６", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := matchTOTP(key, tt.code, now, tt.last); ok != tt.ok {
				t.Errorf("matchTOTP(%q, last %d) = %v, want %v", tt.code, tt.last, ok, tt.ok)
			}
		})
	}
}

func FuzzVerifyTOTP(f *testing.F) {
	f.Add("287082", int64(59))
	f.Add("081804", int64(1111111109))
	f.Add(" 1 2 3", int64(0))
	f.Fuzz(func(t *testing.T, code string, unix int64) {
		if unix < 0 || unix > 1<<40 {
			return
		}
		key := []byte("12345678901234567890")
		now := time.Unix(unix, 0)
		step, ok := matchTOTP(key, code, now, 0)
		if !ok {
			return
		}
		c, _ := parseCode(code)
		if d := step - totpStep(now); d < -1 || d > 1 || hotp(key, uint64(step), totpDigits) != c {
			t.Errorf("matchTOTP(%q, %d) accepted step %d", code, unix, step)
		}
	})
}

func FuzzRecoveryCode(f *testing.F) {
	f.Add("abcd-efgh-ijkl-mnop")
	f.Add("ABCDEFGHIJKLMNOP")
	f.Fuzz(func(t *testing.T, code string) {
		h, ok := recoveryHash(code)
		if ok && len(h) != 32 {
			t.Errorf("recoveryHash(%q) = %x", code, h)
		}
	})
}

// codeAt is the TOTP code of secret (base32) at now.
func codeAt(t testing.TB, secret string, now time.Time, offset int64) string {
	t.Helper()
	key, err := b32.DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return hotp(key, uint64(totpStep(now)+offset), totpDigits)
}

func TestTOTPFlow(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.Issuer = "Acme PAM"; c.SourceBurst = 100; c.MaxFailures = 100 })
		ctx, d := e.ctx, e.dir
		e.mustUser(t, "alice", goodPW)
		if _, err := d.EnrollTOTP(ctx, admin, "nobody"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("EnrollTOTP(nobody) = %v", err)
		}
		en, err := d.EnrollTOTP(ctx, admin, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if key, err := b32.DecodeString(en.Secret); err != nil || len(key) != 20 {
			t.Errorf("secret %q: %d bytes, %v", en.Secret, len(key), err)
		}
		u, err := url.Parse(en.URI)
		q := u.Query()
		if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/Acme PAM:alice" ||
			q.Get("secret") != en.Secret || q.Get("issuer") != "Acme PAM" || q.Get("algorithm") != "SHA1" || q.Get("digits") != "6" || q.Get("period") != "30" {
			t.Errorf("URI %q", en.URI)
		}

		// Stored encrypted: the raw column is neither the secret nor its text.
		var ct []byte
		if err := db.QueryRowContext(ctx, `SELECT secret_ct FROM identity_totp WHERE user_name = 'alice'`).Scan(&ct); err != nil {
			t.Fatal(err)
		}
		key, _ := b32.DecodeString(en.Secret)
		if len(ct) < 20 || bytes.Contains(ct, key) || bytes.Contains(ct, []byte(en.Secret)) {
			t.Errorf("secret_ct holds the secret: %x", ct)
		}

		// Pending: login does not ask for a code.
		if _, tok, err := e.login("alice", goodPW, ""); err != nil || tok.MFA {
			t.Errorf("login while pending = %+v, %v", tok, err)
		}
		if _, err := d.ConfirmTOTP(ctx, admin, "alice", "000000"); err != errBadCode && codeAt(t, en.Secret, e.clock.Now(), 0) != "000000" {
			t.Errorf("ConfirmTOTP(wrong) = %v", err)
		}
		codes, err := d.ConfirmTOTP(ctx, admin, "alice", codeAt(t, en.Secret, e.clock.Now(), 0))
		if err != nil || len(codes) != 10 {
			t.Fatalf("ConfirmTOTP = %v, %v", codes, err)
		}
		if _, err := d.ConfirmTOTP(ctx, admin, "alice", codeAt(t, en.Secret, e.clock.Now(), 1)); !errkind.Is(err, errkind.Conflict) {
			t.Errorf("second ConfirmTOTP = %v", err)
		}
		if _, err := d.EnrollTOTP(ctx, admin, "alice"); !errkind.Is(err, errkind.Conflict) {
			t.Errorf("EnrollTOTP when enrolled = %v", err)
		}
		if us, _ := d.User(ctx, "alice"); !us.MFAEnrolled {
			t.Errorf("User.MFAEnrolled false after confirm")
		}

		login := func(pw []byte, code string) (Token, error) {
			_, tok, err := e.login("alice", pw, code)
			return tok, err
		}
		if _, err := login(goodPW, ""); err != ErrMFARequired {
			t.Errorf("login without code = %v, want ErrMFARequired", err)
		}
		if _, err := login([]byte("wrong password!!"), ""); err != ErrBadCredentials {
			t.Errorf("wrong password, no code = %v, want ErrBadCredentials", err)
		}
		if _, err := login([]byte("wrong password!!"), codeAt(t, en.Secret, e.clock.Now(), 1)); err != ErrBadCredentials {
			t.Errorf("wrong password, good code = %v, want ErrBadCredentials", err)
		}
		// The confirming code's step is used.
		if _, err := login(goodPW, codeAt(t, en.Secret, e.clock.Now(), 0)); err != ErrMFACodeReused {
			t.Errorf("replay of the confirming code = %v, want ErrMFACodeReused", err)
		}
		e.clock.Advance(30 * time.Second)
		now := e.clock.Now()
		c := codeAt(t, en.Secret, now, 0)
		presented, tok, err := e.login("alice", goodPW, c)
		if err != nil || !tok.MFA || tok.MFAAt != now {
			t.Fatalf("login with code = %+v, %v", tok, err)
		}
		if got, err := d.Authenticate(ctx, presented); err != nil || !got.MFA || got.MFAAt != now {
			t.Errorf("Authenticate = %+v, %v; want MFA at %v", got, err, now)
		}
		if _, err := login(goodPW, c); err != ErrMFACodeReused {
			t.Errorf("replayed code = %v, want ErrMFACodeReused", err)
		}
		if _, err := login(goodPW, codeAt(t, en.Secret, now, -1)); err != ErrMFACodeReused {
			t.Errorf("earlier step after a later one was used = %v, want ErrMFACodeReused", err)
		}
		// A wrong password with a spent code says nothing about the code.
		if _, err := login([]byte("wrong password!!"), c); err != ErrBadCredentials {
			t.Errorf("wrong password, spent code = %v, want ErrBadCredentials", err)
		}
		if _, err := login(goodPW, codeAt(t, en.Secret, now, 2)); err != ErrBadMFACode {
			t.Errorf("code two steps ahead = %v", err)
		}
		if _, err := login(goodPW, codeAt(t, en.Secret, now, 1)); err != nil {
			t.Errorf("next step's code = %v", err)
		}

		// Recovery codes: single use, any case and dashes.
		rc := strings.ToUpper(strings.ReplaceAll(codes[0], "-", ""))
		if tok, err := login(goodPW, rc); err != nil || !tok.MFA {
			t.Errorf("recovery code = %+v, %v", tok, err)
		}
		if _, err := login(goodPW, codes[0]); err != ErrBadMFACode {
			t.Errorf("reused recovery code = %v", err)
		}
		if _, err := login(goodPW, "aaaa-aaaa-aaaa-aaaa"); err != ErrBadMFACode {
			t.Errorf("made-up recovery code = %v", err)
		}
		if _, err := login(goodPW, codes[1]); err != nil {
			t.Errorf("second recovery code = %v", err)
		}

		// Key rotation: Rewrap moves the secret to the new key; it still works.
		if _, err := e.barrier.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := d.Rewrap(ctx, e.barrier); err != nil || n != 1 {
			t.Errorf("Rewrap = %d, %v; want 1", n, err)
		}
		if n, err := d.Rewrap(ctx, e.barrier); err != nil || n != 0 {
			t.Errorf("second Rewrap = %d, %v; want 0", n, err)
		}
		e.clock.Advance(90 * time.Second)
		if _, err := login(goodPW, codeAt(t, en.Secret, e.clock.Now(), 0)); err != nil {
			t.Errorf("login after rewrap = %v", err)
		}

		if err := d.DisableTOTP(ctx, admin, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := d.DisableTOTP(ctx, admin, "alice"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("second DisableTOTP = %v", err)
		}
		if tok, err := login(goodPW, ""); err != nil || tok.MFA {
			t.Errorf("login after DisableTOTP = %+v, %v", tok, err)
		}
		if _, err := login(goodPW, codes[2]); err != nil {
			t.Errorf("login with a stale recovery code when MFA is off = %v (the code is ignored)", err)
		}
		// Re-enrolling makes a new secret, under a new AAD version.
		en2, err := d.EnrollTOTP(ctx, admin, "alice")
		if err != nil || en2.Secret == en.Secret {
			t.Fatalf("re-enroll = %v", err)
		}
		var version int64
		if err := db.QueryRowContext(ctx, `SELECT version FROM identity_totp WHERE user_name = 'alice'`).Scan(&version); err != nil || version != 2 {
			t.Errorf("version = %d, %v; want 2", version, err)
		}
		if n := e.countEvents(t, "auth.login", "deny", "bad_code"); n < 3 {
			t.Errorf("%d bad_code events, want at least 3", n)
		}
		if n := e.countEvents(t, "auth.login", "deny", "reused_code"); n != 3 {
			t.Errorf("%d reused_code events, want 3", n)
		}
	})
}

// TestTOTPReplayConcurrent logs in with one code twice at once, on both
// stores: exactly one login may succeed, whatever the interleaving.
func TestTOTPReplayConcurrent(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.SourceBurst = 1000; c.MaxFailures = 1000 })
		e.mustUser(t, "alice", goodPW)
		en, err := e.dir.EnrollTOTP(e.ctx, admin, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.ConfirmTOTP(e.ctx, admin, "alice", codeAt(t, en.Secret, e.clock.Now(), 0)); err != nil {
			t.Fatal(err)
		}
		for round := range 8 {
			e.clock.Advance(30 * time.Second)
			code := codeAt(t, en.Secret, e.clock.Now(), 0)
			errs := make(chan error, 2)
			start := make(chan struct{})
			for range 2 {
				go func() {
					<-start
					_, _, err := e.login("alice", goodPW, code)
					errs <- err
				}()
			}
			close(start)
			ok := 0
			for range 2 {
				switch err := <-errs; err {
				case nil:
					ok++
				case ErrMFACodeReused:
				default:
					t.Fatalf("round %d: %v", round, err)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d logins succeeded with one code", round, ok)
			}
		}
	})
}
