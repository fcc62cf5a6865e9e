package main

// The crash test: rotations run in a child `warder server` that is killed
// with SIGKILL at random moments, many times over; after each restart every
// account's stored credential must log in to its real target.
//
//	go test ./cmd/warder/ -run TestCrashDuringRotation -v                      # 25 trials
//	WARDER_CRASH_TRIALS=500 go test ./cmd/warder/ -run TestCrashDuringRotation -v -timeout 60m
//
// A failing trial logs its seed; WARDER_CRASH_SEED=N reruns the same
// sequence of kill delays and requests.

import (
	"context"
	"crypto/rand"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/testenv"
)

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("$%s = %q: want a non-negative number", name, v)
	}
	return n
}

// crashAccount is an account the crash test checks, with how to log in to
// its target directly.
type crashAccount struct {
	id    string // target/user
	login func(ctx context.Context, password string) error
}

func TestCrashDuringRotation(t *testing.T) {
	trials := envInt(t, "WARDER_CRASH_TRIALS", 25)
	seed := uint64(envInt(t, "WARDER_CRASH_SEED", int(time.Now().UnixNano()%1e9)))
	const perTarget = 8
	ctx := context.Background()
	pg := testenv.PostgresSCRAM(t)
	my := testenv.MariaDB(t)
	s := newVaultServer(t)

	var accts []crashAccount
	pgLoginAs := func(user string) func(context.Context, string) error {
		return func(ctx context.Context, pw string) error { return pgLogin(ctx, pg, user, pw) }
	}
	myLoginAs := func(user string) func(context.Context, string) error {
		return func(ctx context.Context, pw string) error { return mysqlLogin(ctx, my, user, pw) }
	}
	// PostgreSQL: the management role is rotated too (by itself), while it
	// resets the others.
	mgmt := addPGTarget(t, s.api, pg, "crash-pg", 4)
	accts = append(accts, crashAccount{"crash-pg/" + mgmt, pgLoginAs(mgmt)})
	for range perTarget {
		pw := "initial-" + rand.Text()
		role := pg.CreateRole(t, pw, "")
		s.api.must(t, "POST", "/v1/accounts", map[string]any{"target": "crash-pg", "username": role, "password": pw, "rotate_on_checkin": false}, nil)
		accts = append(accts, crashAccount{"crash-pg/" + role, pgLoginAs(role)})
	}
	// MariaDB.
	myMgmtPW := "mgmt-" + rand.Text()
	myMgmt := my.CreateUser(t, myMgmtPW, "%", "CREATE USER")
	s.api.must(t, "POST", "/v1/targets", map[string]any{"name": "crash-my", "kind": "mysql", "host": my.Host, "port": my.Port,
		"options": map[string]string{"account_host": "%"}, "management_account": myMgmt, "max_concurrent_rotations": 4}, nil)
	s.api.must(t, "POST", "/v1/accounts", map[string]any{"target": "crash-my", "username": myMgmt, "password": myMgmtPW, "rotate_on_checkin": false}, nil)
	accts = append(accts, crashAccount{"crash-my/" + myMgmt, myLoginAs(myMgmt)})
	for range perTarget {
		pw := "initial-" + rand.Text()
		user := my.CreateUser(t, pw, "%")
		s.api.must(t, "POST", "/v1/accounts", map[string]any{"target": "crash-my", "username": user, "password": pw, "rotate_on_checkin": false}, nil)
		accts = append(accts, crashAccount{"crash-my/" + user, myLoginAs(user)})
	}
	// The check below would prove nothing if the targets took any password.
	if err := pgLogin(ctx, pg, mgmt, "wrong"); !pgRefused(err) {
		t.Fatalf("PostgreSQL accepted a wrong password: %v", err)
	}
	if err := mysqlLogin(ctx, my, myMgmt, "wrong"); !mysqlRefused(err) {
		t.Fatalf("MariaDB accepted a wrong password: %v", err)
	}

	var (
		failures     int   // accounts whose stored credential did not log in, over all trials
		midRotation  int   // trials whose kill left at least one rotation to recover
		recovered    int64 // pending versions settled by recovery after a kill
		promoted     int64 // … of which the target had taken (promoted)
		requests     atomic.Int64
		rotatedTotal atomic.Int64
		recoverTime  time.Duration
	)
	started := time.Now()
	for trial := range trials {
		rng := mrand.New(mrand.NewPCG(seed, uint64(trial)))
		delay := time.Duration(rng.IntN(300)) * time.Millisecond

		// Load: four clients firing account and target rotations.
		lctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for w := range 4 {
			wrng := mrand.New(mrand.NewPCG(seed, uint64(trial)<<8|uint64(w)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for lctx.Err() == nil {
					var path string
					switch k := wrng.IntN(20); {
					case k == 0:
						path = "/v1/targets/crash-pg/rotate"
					case k == 1:
						path = "/v1/targets/crash-my/rotate"
					default:
						path = "/v1/accounts/" + accts[wrng.IntN(len(accts))].id + "/rotate"
					}
					var res struct {
						Outcome string `json:"outcome"`
					}
					requests.Add(1)
					err := s.api.call(lctx, "POST", path, struct{}{}, &res)
					if err == nil && res.Outcome == "rotated" {
						rotatedTotal.Add(1)
					}
				}
			}()
		}
		time.Sleep(delay)
		killedAt := time.Now()
		s.p.kill()
		stop()
		wg.Wait()

		// Restart: recovery runs once the server is unsealed.
		s.restart(t)
		t0 := time.Now()
		waitSettled(t, s.api, trial, seed)
		recoverTime += time.Since(t0)
		n, p := recoveredSince(t, s.api, killedAt)
		recovered += n
		promoted += p
		if n > 0 {
			midRotation++
		}

		// Every stored credential logs in to its real target.
		for _, a := range accts {
			var co checkoutAnswer
			if err := s.api.call(ctx, "POST", "/v1/accounts/"+a.id+"/checkout", map[string]any{"reason": "crash test check", "ttl": "1m"}, &co); err != nil {
				t.Errorf("trial %d (seed %d, kill after %v): checkout %s: %v", trial, seed, delay, a.id, err)
				failures++
				continue
			}
			if err := a.login(ctx, co.Password); err != nil {
				t.Errorf("trial %d (seed %d, kill after %v): the stored credential of %s (version %d) does not log in: %v", trial, seed, delay, a.id, co.CredentialVersion, err)
				failures++
			}
			s.api.must(t, "POST", "/v1/accounts/"+a.id+"/checkin", nil, nil)
		}
		if t.Failed() {
			t.Logf("server log of the failed trial:\n%s", s.p.stderr)
			break
		}
	}
	elapsed := time.Since(started)
	t.Logf("crash test: %d trials, %d failures (accounts whose stored credential did not log in), seed %d", trials, failures, seed)
	t.Logf("crash test: %d kills mid-rotation, %d interrupted rotations recovered (%d promoted, %d dropped), %d rotate requests, %d rotations completed, %d accounts on PostgreSQL and MariaDB",
		midRotation, recovered, promoted, recovered-promoted, requests.Load(), rotatedTotal.Load(), len(accts))
	if trials > 0 {
		t.Logf("crash test: %v in all, mean recovery after restart %v", elapsed.Round(time.Millisecond), (recoverTime / time.Duration(trials)).Round(time.Millisecond))
	}
}

// waitSettled waits until no account has a pending version: recovery has
// settled every rotation the kill interrupted.
func waitSettled(t *testing.T, api *apiClient, trial int, seed uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var al struct {
			Accounts []account `json:"accounts"`
		}
		api.must(t, "GET", "/v1/accounts", nil, &al)
		var pending []string
		for _, a := range al.Accounts {
			if a.HasPending {
				pending = append(pending, a.ID)
			}
			if a.Status == "out_of_sync" {
				t.Errorf("trial %d (seed %d): %s is out of sync after recovery", trial, seed, a.ID)
			}
		}
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("trial %d (seed %d): pending versions not recovered 30s after the restart: %v", trial, seed, pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recoveredSince counts the pending versions the restarted server's
// recovery settled since the kill: (all, promoted).
func recoveredSince(t *testing.T, api *apiClient, since time.Time) (n, promoted int64) {
	t.Helper()
	var evs struct {
		Events []struct {
			Outcome string `json:"outcome"`
		} `json:"events"`
	}
	q := url.Values{"actor": {"system:rotation"}, "action": {"account.rotate"}, "since": {since.UTC().Format(time.RFC3339Nano)}, "limit": {"1000"}}
	api.must(t, "GET", "/v1/audit/events?"+q.Encode(), nil, &evs)
	for _, e := range evs.Events {
		n++
		if e.Outcome == "success" {
			promoted++
		}
	}
	return n, promoted
}
