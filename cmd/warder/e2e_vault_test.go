package main

// End-to-end tests of the credential vault through the HTTP API of a real
// `warder server` process, with the managed accounts on the password-checked
// PostgreSQL cluster (testenv.PostgresSCRAM) and MariaDB.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/testenv"
)

// apiClient calls a server's HTTP API with one token.
type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

// newAPI returns a client of the server at base that trusts caFile.
func newAPI(t testing.TB, base, caFile, token string) *apiClient {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &apiClient{base: base, token: token, hc: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// as is c with another token.
func (c *apiClient) as(token string) *apiClient {
	cc := *c
	cc.token = token
	return &cc
}

// apiError is an error answer of the API.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message) }

// call sends body (nil: none) as JSON and decodes a 2xx answer into out
// (nil: discard). An error answer is an *apiError.
func (c *apiClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error apiError `json:"error"`
		}
		json.Unmarshal(data, &e)
		e.Error.Status = resp.StatusCode
		return &e.Error
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	return json.Unmarshal(data, out)
}

// must is call that fails t on an error.
func (c *apiClient) must(t testing.TB, method, path string, body, out any) {
	t.Helper()
	if err := c.call(context.Background(), method, path, body, out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

// vaultServer is a SQLite-backed `warder server` in its own data
// directory that unseals itself with a key file at every start.
type vaultServer struct {
	dir     string
	keyFile string
	token   string // the admin token
	p       *proc
	api     *apiClient // as the admin, on the current process
}

// newVaultServer starts a fresh server, initialises it with one key share
// and an unseal key file, and unseals it.
func newVaultServer(t *testing.T) *vaultServer {
	t.Helper()
	s := &vaultServer{dir: t.TempDir()}
	s.keyFile = filepath.Join(s.dir, "unseal.key")
	s.p = start(t, "server", "--data-dir", s.dir, "--listen", "127.0.0.1:0")
	anon := newAPI(t, s.p.url, filepath.Join(s.dir, "ca.pem"), "")
	var ir struct {
		Shares     []string `json:"shares"`
		AdminToken string   `json:"admin_token"`
		UnsealKey  string   `json:"unseal_key"`
	}
	anon.must(t, "POST", "/v1/sys/init", map[string]any{"shares": 1, "threshold": 1, "key_file": true}, &ir)
	if err := os.WriteFile(s.keyFile, []byte(ir.UnsealKey), 0o600); err != nil {
		t.Fatal(err)
	}
	anon.must(t, "POST", "/v1/sys/unseal", map[string]string{"share": ir.Shares[0]}, nil)
	s.token = ir.AdminToken
	s.api = anon.as(s.token)
	return s
}

// restart starts the server again (after stop or kill), unsealed by its
// key file.
func (s *vaultServer) restart(t *testing.T) {
	t.Helper()
	s.p = start(t, "server", "--data-dir", s.dir, "--listen", "127.0.0.1:0", "--unseal-key-file", s.keyFile)
	s.api = newAPI(t, s.p.url, filepath.Join(s.dir, "ca.pem"), s.token)
}

// kill ends the server with SIGKILL and waits for it to be gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	err := <-p.done
	p.done <- err
}

// account is the API's account object, the fields the tests read.
type account struct {
	ID                string `json:"id"`
	Username          string `json:"username"`
	Status            string `json:"status"`
	CredentialVersion int64  `json:"credential_version"`
	HasPending        bool   `json:"has_pending"`
	RotationDue       bool   `json:"rotation_due"`
}

// checkoutAnswer is the API's answer to a check-out.
type checkoutAnswer struct {
	LeaseID           string    `json:"lease_id"`
	Account           string    `json:"account"`
	Holder            string    `json:"holder"`
	CheckedOutAt      time.Time `json:"checked_out_at"`
	ExpiresAt         time.Time `json:"expires_at"`
	CredentialVersion int64     `json:"credential_version"`
	Password          string    `json:"password"`
}

// pgLogin logs in to the SCRAM cluster as user with password, with pgx
// directly (not the connector under test): nil, or the server's refusal.
func pgLogin(ctx context.Context, c *testenv.SCRAMCluster, user, password string) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=postgres sslmode=disable connect_timeout=10", c.Host, c.Port))
	if err != nil {
		return err
	}
	cfg.User, cfg.Password = user, password
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// pgRefused reports whether err is PostgreSQL refusing a password.
func pgRefused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "28P01"
}

// mysqlLogin logs in to MariaDB as user with password, with the driver
// directly.
func mysqlLogin(ctx context.Context, s *testenv.MariaDBServer, user, password string) error {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = user, password, "tcp", fmt.Sprintf("%s:%d", s.Host, s.Port)
	cfg.Timeout = 10 * time.Second
	cfg.Logger = &mysql.NopLogger{}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	return db.PingContext(ctx)
}

func mysqlRefused(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1045
}

// addPGTarget adds a postgres target on the SCRAM cluster with a
// management role (CREATEROLE) stored as its management account.
func addPGTarget(t *testing.T, api *apiClient, c *testenv.SCRAMCluster, name string, maxRotations int) (mgmt string) {
	t.Helper()
	mgmtPW := "mgmt-" + rand.Text()
	mgmt = c.CreateRole(t, mgmtPW, "CREATEROLE")
	api.must(t, "POST", "/v1/targets", map[string]any{
		"name": name, "kind": "postgres", "host": c.Host, "port": c.Port,
		"options": map[string]string{"sslmode": "disable"}, "management_account": mgmt, "max_concurrent_rotations": maxRotations,
	}, nil)
	api.must(t, "POST", "/v1/accounts", map[string]any{"target": name, "username": mgmt, "password": mgmtPW, "rotate_on_checkin": false}, nil)
	return mgmt
}

// TestVaultFlowPostgres: target add → account add with generate →
// check-out → the password logs in → check-in → the account rotates →
// the old password is refused.
func TestVaultFlowPostgres(t *testing.T) {
	ctx := context.Background()
	pg := testenv.PostgresSCRAM(t)
	s := newVaultServer(t)
	addPGTarget(t, s.api, pg, "prod-pg", 0)

	// The role exists with a password nobody knows; generate sets one.
	role := pg.CreateRole(t, "unknown-"+rand.Text(), "")
	var a account
	s.api.must(t, "POST", "/v1/accounts", map[string]any{"target": "prod-pg", "username": role, "generate": true}, &a)
	if a.CredentialVersion != 1 || a.Status != "ok" {
		t.Fatalf("account after generate: %+v", a)
	}

	var co checkoutAnswer
	s.api.must(t, "POST", "/v1/accounts/prod-pg/"+role+"/checkout", map[string]any{"reason": "e2e", "ttl": "10m"}, &co)
	if co.LeaseID == "" || co.Password == "" || co.ExpiresAt.Before(time.Now().Add(9*time.Minute)) || co.ExpiresAt.After(time.Now().Add(11*time.Minute)) {
		t.Fatalf("checkout answer: lease %q, password set %v, expires %v", co.LeaseID, co.Password != "", co.ExpiresAt)
	}
	if err := pgLogin(ctx, pg, role, "not-"+co.Password); !pgRefused(err) {
		t.Fatalf("a wrong password: %v; want it refused", err)
	}
	if err := pgLogin(ctx, pg, role, co.Password); err != nil {
		t.Fatalf("the checked-out password does not log in: %v", err)
	}

	s.api.must(t, "POST", "/v1/accounts/prod-pg/"+role+"/checkin", nil, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.api.must(t, "GET", "/v1/accounts/prod-pg/"+role, nil, &a)
		if a.CredentialVersion > co.CredentialVersion && a.CredentialVersion > 1 && !a.RotationDue {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rotation within 30s of the check-in: %+v", a)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := pgLogin(ctx, pg, role, co.Password); !pgRefused(err) {
		t.Fatalf("the returned password after the rotation: %v; want it refused", err)
	}
	// The new credential is the one a new check-out hands out, and it works.
	var co2 checkoutAnswer
	s.api.must(t, "POST", "/v1/accounts/prod-pg/"+role+"/checkout", map[string]any{"reason": "e2e again"}, &co2)
	if co2.Password == co.Password {
		t.Fatal("the second check-out handed out the first password")
	}
	if err := pgLogin(ctx, pg, role, co2.Password); err != nil {
		t.Fatalf("the rotated password does not log in: %v", err)
	}
}

// TestVaultExclusiveCheckoutE2E: 50 users ask for one max_checkouts=1
// account at once with wait; exactly one holds it at a time, the waitlist
// is served in arrival order, and each holder's password logs in (the
// account rotates on every check-in, so each gets a new one).
func TestVaultExclusiveCheckoutE2E(t *testing.T) {
	const users = 50
	ctx := context.Background()
	pg := testenv.PostgresSCRAM(t)
	s := newVaultServer(t)
	addPGTarget(t, s.api, pg, "shared-pg", 0)
	role := pg.CreateRole(t, "initial-"+rand.Text(), "")
	s.api.must(t, "POST", "/v1/accounts", map[string]any{"target": "shared-pg", "username": role, "generate": true, "max_checkouts": 1}, nil)

	// 50 users in a group a policy lets check the account out.
	s.api.must(t, "POST", "/v1/groups", map[string]string{"name": "oncall"}, nil)
	s.api.must(t, "PUT", "/v1/policies/oncall-shared", map[string]string{
		"text": `permit(principal in Group::"oncall", action == Action::"checkout", resource == Account::"shared-pg/` + role + `");`,
	}, nil)
	clients := make([]*apiClient, users)
	var wg sync.WaitGroup
	for i := range users {
		name := fmt.Sprintf("u%02d", i)
		password := "password-of-" + name
		s.api.must(t, "POST", "/v1/users", map[string]string{"name": name, "password": password}, nil)
		s.api.must(t, "POST", "/v1/groups/oncall/members", map[string]string{"kind": "user", "name": name}, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lr struct {
				Token string `json:"token"`
			}
			s.api.as("").must(t, "POST", "/v1/auth/login", map[string]string{"user": name, "password": password}, &lr)
			clients[i] = s.api.as(lr.Token)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	type hold struct {
		user       int
		start, end time.Time
		lease      string
		version    int64
	}
	var mu sync.Mutex
	var holds []hold
	path := "/v1/accounts/shared-pg/" + role
	maxWaiting := 0 // the longest waitlist seen
	for i := range users {
		served := make(chan struct{}) // closed when the check-out answered
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i]
			var co checkoutAnswer
			err := c.call(ctx, "POST", path+"/checkout", map[string]any{"reason": "contention test", "wait": true}, &co)
			close(served)
			if err != nil {
				t.Errorf("user %d: checkout: %v", i, err)
				return
			}
			h := hold{user: i, start: time.Now(), lease: co.LeaseID, version: co.CredentialVersion}
			if err := pgLogin(ctx, pg, role, co.Password); err != nil {
				t.Errorf("user %d: the checked-out password does not log in: %v", i, err)
			}
			time.Sleep(5 * time.Millisecond)
			h.end = time.Now()
			if err := c.call(ctx, "POST", path+"/checkin", nil, nil); err != nil {
				t.Errorf("user %d: checkin: %v", i, err)
			}
			mu.Lock()
			holds = append(holds, h)
			mu.Unlock()
		}()
		// Arrival order is well defined: the next request goes out once
		// this one holds the account or waits in line.
		maxWaiting = max(maxWaiting, waitQueued(t, s.api, "shared-pg/"+role, fmt.Sprintf("user:u%02d", i), served))
	}
	wg.Wait()

	if len(holds) != users {
		t.Fatalf("%d of %d users got the account", len(holds), users)
	}
	slices.SortFunc(holds, func(a, b hold) int { return a.start.Compare(b.start) })
	order := make([]int, len(holds))
	versions := map[int64]bool{}
	for k, h := range holds {
		order[k] = h.user
		versions[h.version] = true
		if k > 0 && h.start.Before(holds[k-1].end) {
			t.Errorf("users %d and %d held the account together: [%v, %v] and [%v, %v]",
				holds[k-1].user, h.user, holds[k-1].start, holds[k-1].end, h.start, h.end)
		}
	}
	for k := range order {
		if order[k] != k {
			t.Errorf("service order %v; want arrival order 0..%d", order, users-1)
			break
		}
	}
	if maxWaiting < 10 {
		t.Errorf("at most %d users waited at once; the test needs a real queue to prove its order", maxWaiting)
	}
	if len(versions) != users {
		t.Errorf("%d distinct credential versions among %d holders; want a rotation between every two", len(versions), users)
	}
	span := holds[len(holds)-1].end.Sub(holds[0].start)
	t.Logf("%d users served in arrival order (up to %d waiting at once), no overlap, a new password each, in %v (%v per hand-over incl. rotation)",
		users, maxWaiting, span.Round(time.Millisecond), (span / users).Round(time.Millisecond))
}

// waitQueued waits until principal holds account or waits for it, or its
// request was answered (served closed). It returns how many were waiting.
func waitQueued(t *testing.T, api *apiClient, account, principal string, served <-chan struct{}) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-served:
			return 0
		default:
		}
		var ll struct {
			Leases []struct {
				Holder string `json:"holder"`
			} `json:"leases"`
			Waiting []struct {
				Principal string `json:"principal"`
			} `json:"waiting"`
		}
		if err := api.call(context.Background(), "GET", "/v1/leases?account="+url.QueryEscape(account), nil, &ll); err != nil {
			t.Fatalf("list leases: %v", err)
		}
		for _, l := range ll.Leases {
			if l.Holder == principal {
				return len(ll.Waiting)
			}
		}
		for _, w := range ll.Waiting {
			if w.Principal == principal {
				return len(ll.Waiting)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s neither holds nor waits for %s after 20s", principal, account)
	return 0
}
