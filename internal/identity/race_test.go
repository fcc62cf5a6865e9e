package identity

import (
	"database/sql"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// parallel runs f n times at once and returns the errors.
func parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// TestParallelLoginsReserveAttempts checks that concurrent wrong logins
// cannot get more password checks than the limits allow: each attempt
// takes its place in the name's count and the source's bucket before the
// password is checked.
func TestParallelLoginsReserveAttempts(t *testing.T) {
	const n = 40
	tests := []struct {
		name               string
		maxFailures, burst int
		limit              int
	}{
		{"per user", 5, 1000, 5},
		{"per source", 1000, 10, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forBackends(t, func(t *testing.T, db *store.DB) {
				e := newEnv(t, db, func(c *Config) {
					c.MaxFailures, c.SourceBurst = tt.maxFailures, tt.burst
					c.SourceRate = 1.0 / 3600
					// A slower hash widens the window between reading the limits
					// and counting the failure.
					c.Password = PasswordParams{Time: 1, Memory: 4 * 1024, Threads: 1}
				})
				user := strings.ReplaceAll(tt.name, " ", "-")
				e.mustUser(t, user, goodPW)
				wrong := []byte("wrong password!!")
				errs := parallel(n, func(int) error {
					_, _, err := e.login(user, wrong, "")
					return err
				})
				bad, limited := 0, 0
				for _, err := range errs {
					switch err {
					case ErrBadCredentials:
						bad++
					case ErrRateLimited:
						limited++
					default:
						t.Errorf("parallel wrong login: %v", err)
					}
				}
				verified := e.countEvents(t, "auth.login", audit.OutcomeDeny, "bad_password")
				if verified > tt.limit || bad != verified || bad+limited != n || bad == 0 {
					t.Errorf("%d parallel wrong logins: %d password checks (%d bad credentials, %d rate limited), want 1 to %d",
						n, verified, bad, limited, tt.limit)
				}
				if _, _, err := e.login(user, goodPW, ""); err != ErrRateLimited {
					t.Errorf("right password after the flood: %v, want ErrRateLimited", err)
				}
			})
		})
	}
}

// TestParallelMachineLoginsReserveAttempts is the same for machine logins
// and the per-source limit.
func TestParallelMachineLoginsReserveAttempts(t *testing.T) {
	const n, burst = 40, 10
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.SourceBurst = burst; c.SourceRate = 1.0 / 3600 })
		m, err := e.dir.CreateMachine(e.ctx, admin, MachineSpec{Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		secret, _, err := e.dir.IssueSecretID(e.ctx, admin, "ci", SecretIDSpec{})
		if err != nil {
			t.Fatal(err)
		}
		src := netip.MustParseAddr("198.51.100.7")
		errs := parallel(n, func(int) error {
			_, _, err := e.dir.LoginMachine(e.ctx, audit.Origin{Source: src.String()}, m.RoleID, "wsi1.nope", src)
			return err
		})
		bad, limited := 0, 0
		for _, err := range errs {
			switch err {
			case ErrMachineCredentials:
				bad++
			case ErrRateLimited:
				limited++
			default:
				t.Errorf("parallel wrong machine login: %v", err)
			}
		}
		if bad > burst || bad+limited != n || bad == 0 {
			t.Errorf("%d parallel wrong machine logins: %d checked, %d rate limited; want 1 to %d checked", n, bad, limited, burst)
		}
		if _, _, err := e.dir.LoginMachine(e.ctx, audit.Origin{}, m.RoleID, secret, src); err != ErrRateLimited {
			t.Errorf("right secret id after the flood: %v, want ErrRateLimited", err)
		}
		// A success gives its place back.
		other := netip.MustParseAddr("198.51.100.8")
		for i := range 2 * burst {
			if _, _, err := e.dir.LoginMachine(e.ctx, audit.Origin{}, m.RoleID, secret, other); err != nil {
				t.Fatalf("good machine login %d: %v", i, err)
			}
		}
	})
}

// TestSuccessRefundsReservation checks that successful logins and
// attempts that stop for a missing second factor do not count.
func TestSuccessRefundsReservation(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.MaxFailures = 2; c.SourceBurst = 2; c.SourceRate = 1.0 / 3600 })
		e.mustUser(t, "alice", goodPW)
		e.mustUser(t, "bob", goodPW)
		en, err := e.dir.EnrollTOTP(e.ctx, admin, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.dir.ConfirmTOTP(e.ctx, admin, "bob", codeAt(t, en.Secret, e.clock.Now(), 0)); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if _, _, err := e.login("alice", goodPW, ""); err != nil {
				t.Fatalf("login %d: %v", i, err)
			}
			if _, _, err := e.login("bob", goodPW, ""); err != ErrMFARequired {
				t.Fatalf("bob without a code %d: %v", i, err)
			}
		}
		if _, _, err := e.login("alice", []byte("wrong password!!"), ""); err != ErrBadCredentials {
			t.Errorf("first failure: %v", err)
		}
		if _, _, err := e.login("alice", goodPW, ""); err != nil {
			t.Errorf("after one failure: %v", err)
		}
	})
}

// TestLoginDeleteNoDeadlock deletes a user while their login, with a
// second factor, is between spending the code and checking the user: on
// PostgreSQL both must lock the user's rows in one order.
func TestLoginDeleteNoDeadlock(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			db := be.Open(t)
			if db.Kind() != store.Postgres {
				t.Skip("SQLite serialises write transactions")
			}
			e := newEnv(t, db, func(c *Config) { c.MaxFailures = 1000; c.SourceBurst = 1000 })
			for round := range 4 {
				name := fmt.Sprint("u", round)
				e.mustUser(t, name, goodPW)
				en, err := e.dir.EnrollTOTP(e.ctx, admin, name)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.dir.ConfirmTOTP(e.ctx, admin, name, codeAt(t, en.Secret, e.clock.Now(), 0)); err != nil {
					t.Fatal(err)
				}
				delErr := make(chan error, 1)
				e.dir.testAfterSecondFactor = func() {
					go func() { delErr <- e.dir.DeleteUser(e.ctx, admin, name) }()
					time.Sleep(200 * time.Millisecond) // let the delete take what it can
				}
				_, _, loginErr := e.login(name, goodPW, codeAt(t, en.Secret, e.clock.Now(), 1))
				e.dir.testAfterSecondFactor = nil
				for what, err := range map[string]error{"login": loginErr, "delete": <-delErr} {
					if err != nil && (strings.Contains(err.Error(), "deadlock") || !errkind.Is(err, errkind.Unauthenticated)) {
						t.Errorf("round %d: %s: %v", round, what, err)
					}
				}
			}
			// And without the pause, many times.
			for round := range 20 {
				name := fmt.Sprint("v", round)
				e.mustUser(t, name, goodPW)
				en, err := e.dir.EnrollTOTP(e.ctx, admin, name)
				if err != nil {
					t.Fatal(err)
				}
				codes, err := e.dir.ConfirmTOTP(e.ctx, admin, name, codeAt(t, en.Secret, e.clock.Now(), 0))
				if err != nil {
					t.Fatal(err)
				}
				errs := parallel(2, func(i int) error {
					if i == 0 {
						return e.dir.DeleteUser(e.ctx, admin, name)
					}
					_, _, err := e.login(name, goodPW, codes[0])
					return err
				})
				for _, err := range errs {
					if err != nil && (strings.Contains(err.Error(), "deadlock") || !errkind.Is(err, errkind.Unauthenticated)) {
						t.Errorf("round %d: %v", round, err)
					}
				}
			}
		})
	}
}

// TestConfirmTOTPRacingEnroll re-enrolls between ConfirmTOTP's read and
// its update: the confirmation must fail without recovery codes or a
// success event.
func TestConfirmTOTPRacingEnroll(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		e.mustUser(t, "alice", goodPW)
		en, err := e.dir.EnrollTOTP(e.ctx, admin, "alice")
		if err != nil {
			t.Fatal(err)
		}
		e.dir.testConfirmRead = func(tx *sql.Tx) {
			// What a concurrent EnrollTOTP commits: a new version.
			if _, err := tx.ExecContext(e.ctx, `UPDATE identity_totp SET version = version + 1 WHERE user_name = 'alice'`); err != nil {
				t.Error(err)
			}
		}
		codes, err := e.dir.ConfirmTOTP(e.ctx, admin, "alice", codeAt(t, en.Secret, e.clock.Now(), 0))
		e.dir.testConfirmRead = nil
		wantKind(t, "ConfirmTOTP racing an enrollment", err, errkind.Conflict)
		if codes != nil {
			t.Errorf("recovery codes issued: %d", len(codes))
		}
		if n := e.countEvents(t, "identity.totp.confirm", audit.OutcomeSuccess, ""); n != 0 {
			t.Errorf("%d successful confirm events", n)
		}
		var n int
		if err := db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM identity_recovery_codes WHERE user_name = 'alice'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d recovery codes stored (%v)", n, err)
		}
	})
}
