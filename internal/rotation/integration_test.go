package rotation

// Rotation against the real systems: the real connectors, a PostgreSQL
// cluster that checks passwords (SCRAM), MariaDB, Redis ACL users, and an
// OpenSSH sshd with real local users. Each test first proves the target
// refuses a wrong password, so that a passing rotation proves something.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/connector/linux"
	"github.com/warderhq/warder/internal/connector/mysql"
	"github.com/warderhq/warder/internal/connector/postgres"
	"github.com/warderhq/warder/internal/connector/redis"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
	"github.com/warderhq/warder/internal/vault"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgresSCRAM()
	os.Exit(code)
}

// realConnectors is the server's registry.
func realConnectors() connector.Registry {
	r := connector.Registry{}
	for _, c := range []connector.Connector{postgres.New(), mysql.New(), linux.New(), redis.New()} {
		r[c.Kind()] = c
	}
	return r
}

// realEnv is a vault on SQLite with the real connectors and an engine.
type realEnv struct {
	ctx   context.Context
	db    *store.DB
	b     *barrier.Barrier
	audit *audit.Log
	vault *vault.Vault
	conns connector.Registry
	eng   *Engine
}

func newRealEnv(t testing.TB, db *store.DB) *realEnv {
	t.Helper()
	ctx := context.Background()
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
		t.Fatal(err)
	}
	lg, err := audit.New(ctx, audit.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	v, err := vault.New(ctx, vault.Config{DB: db, Audit: lg, Barrier: b, Authz: allowAll{}})
	if err != nil {
		t.Fatal(err)
	}
	e := &realEnv{ctx: ctx, db: db, b: b, audit: lg, vault: v, conns: realConnectors()}
	e.eng = e.newEngine(t, 0)
	return e
}

// newEngine is a fresh engine on the same vault: a restarted process.
func (e *realEnv) newEngine(t testing.TB, workers int) *Engine {
	t.Helper()
	eng, err := New(Config{Vault: e.vault, Connectors: e.conns, Audit: e.audit, ClaimTTL: time.Minute, Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// realSystem is one kind of real target, set up for one test: its target spec
// (without a name), a management account, and ways to make accounts and
// to change a password behind Warder's back.
type realSystem struct {
	kind     string
	spec     vault.TargetSpec
	mgmtUser string
	mgmtCred connector.Credential
	// newAccount creates an account with password on the real system and
	// returns its name; it is removed when t ends.
	newAccount func(t *testing.T, password string) string
	// setOutside sets the account's password directly on the system, as an
	// administrator working around Warder would.
	setOutside func(t *testing.T, user, password string)
}

func pwCred(s string) connector.Credential {
	return connector.Credential{Kind: connector.Password, Secret: []byte(s)}
}

// randomPassword is a password no test has used.
func randomPassword() string { return "pw-" + rand.Text() }

func postgresSystem(t *testing.T) realSystem {
	c := testenv.PostgresSCRAM(t)
	mgmtPW := randomPassword()
	return realSystem{
		kind: "postgres",
		spec: vault.TargetSpec{Kind: "postgres", Host: c.Host, Port: c.Port,
			Options: map[string]string{postgres.OptSSLMode: "disable"}},
		mgmtUser: c.CreateRole(t, mgmtPW, "CREATEROLE"),
		mgmtCred: pwCred(mgmtPW),
		newAccount: func(t *testing.T, password string) string {
			return c.CreateRole(t, password, "")
		},
		setOutside: func(t *testing.T, user, password string) {
			c.Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD %s", user, testenv.QuoteLiteral(password)))
		},
	}
}

func mariadbSystem(t *testing.T) realSystem {
	s := testenv.MariaDB(t)
	mgmtPW := randomPassword()
	return realSystem{
		kind: "mysql",
		spec: vault.TargetSpec{Kind: "mysql", Host: s.Host, Port: s.Port,
			Options: map[string]string{mysql.OptAccountHost: "%"}},
		mgmtUser: s.CreateUser(t, mgmtPW, "%", "CREATE USER"),
		mgmtCred: pwCred(mgmtPW),
		newAccount: func(t *testing.T, password string) string {
			return s.CreateUser(t, password, "%")
		},
		setOutside: func(t *testing.T, user, password string) {
			s.Exec(t, fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY PASSWORD '%s'", user, testenv.NativePasswordHash(password)))
		},
	}
}

func redisSystem(t *testing.T) realSystem {
	s := testenv.Redis(t)
	mgmtPW := randomPassword()
	return realSystem{
		kind:     "redis",
		spec:     vault.TargetSpec{Kind: "redis", Host: s.Host, Port: s.Port},
		mgmtUser: s.CreateUser(t, mgmtPW, "+acl|getuser", "+acl|setuser"),
		mgmtCred: pwCred(mgmtPW),
		newAccount: func(t *testing.T, password string) string {
			return s.CreateUser(t, password)
		},
		setOutside: func(t *testing.T, user, password string) {
			s.Do(t, "ACL", "SETUSER", user, "resetpass", ">"+password)
		},
	}
}

// linuxSystem is an sshd with real local users; the management account is
// root, logging in with a key.
func linuxSystem(t *testing.T) realSystem {
	s := testenv.SSHD(t)
	return realSystem{
		kind: "linux",
		spec: vault.TargetSpec{Kind: "linux", Host: s.Host, Port: s.Port,
			Options: map[string]string{"host_key": s.HostKey}},
		mgmtUser: "root",
		mgmtCred: connector.Credential{Kind: connector.SSHKey, Secret: s.RootKey, PublicKey: s.RootPublicKey},
		newAccount: func(t *testing.T, password string) string {
			return testenv.LinuxUser(t, password).Username
		},
		setOutside: func(t *testing.T, user, password string) {
			cmd := exec.Command("chpasswd")
			cmd.Stdin = strings.NewReader(user + ":" + password + "\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("chpasswd: %v: %s", err, out)
			}
		},
	}
}

var systems = []struct {
	name string
	make func(t *testing.T) realSystem
}{
	{"postgres", postgresSystem},
	{"mariadb", mariadbSystem},
	{"redis", redisSystem},
	{"linux", linuxSystem},
}

// addTarget adds sys as a target with a unique name and its management
// account, and returns the target's name.
func (e *realEnv) addTarget(t *testing.T, sys realSystem) string {
	t.Helper()
	spec := sys.spec
	spec.Name = strings.ToLower("it-" + sys.kind + "-" + rand.Text()[:6])
	spec.ManagementAccount = sys.mgmtUser
	if _, err := e.vault.AddTarget(e.ctx, origin, spec); err != nil {
		t.Fatal(err)
	}
	mc := sys.mgmtCred
	if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: spec.Name, Username: sys.mgmtUser, Kind: mc.Kind, Credential: &mc}); err != nil {
		t.Fatal(err)
	}
	return spec.Name
}

// addAccount creates a managed account on the real system and in the
// vault, and returns its vault id and username.
func (e *realEnv) addAccount(t *testing.T, sys realSystem, target, password string, deps ...vault.Dependent) (id, user string) {
	t.Helper()
	user = sys.newAccount(t, password)
	c := pwCred(password)
	a, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: target, Username: user, Credential: &c, Dependents: deps})
	if err != nil {
		t.Fatal(err)
	}
	return a.ID, user
}

// login checks cred against the real target: nil, or the connector's error.
func (e *realEnv) login(t *testing.T, target, user string, cred connector.Credential) error {
	t.Helper()
	tgt, err := e.vault.Target(e.ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	ct := tgt.Connector()
	ct.Timeout = 10 * time.Second
	return e.conns[tgt.Kind].Verify(e.ctx, ct, user, cred)
}

func (e *realEnv) mustRefuse(t *testing.T, target, user string, cred connector.Credential, what string) {
	t.Helper()
	if err := e.login(t, target, user, cred); !errors.Is(err, connector.ErrRejected) {
		t.Fatalf("%s: login as %s = %v, want the target to refuse it", what, user, err)
	}
}

func (e *realEnv) mustLogIn(t *testing.T, target, user string, cred connector.Credential, what string) {
	t.Helper()
	if err := e.login(t, target, user, cred); err != nil {
		t.Fatalf("%s: login as %s: %v", what, user, err)
	}
}

// storedLogsIn checks that the account's stored current credential logs
// in, that no pending version is left, and returns the credential.
func (e *realEnv) storedLogsIn(t *testing.T, id, target, user, what string) connector.Credential {
	t.Helper()
	_, cur, err := e.vault.CurrentCredential(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	e.mustLogIn(t, target, user, cur, what+": stored credential")
	if _, _, ok, err := e.vault.PendingCredential(e.ctx, id); err != nil || ok {
		t.Errorf("%s: pending version left (%v, %v)", what, ok, err)
	}
	return cur
}

func TestRealRotate(t *testing.T) {
	for _, s := range systems {
		t.Run(s.name, func(t *testing.T) {
			sys := s.make(t)
			e := newRealEnv(t, testenv.SQLite(t))
			target := e.addTarget(t, sys)
			initial := randomPassword()
			id, user := e.addAccount(t, sys, target, initial)

			// Without a refusal first, a login below would prove nothing.
			e.mustRefuse(t, target, user, pwCred("not-"+initial), "wrong password")
			e.mustLogIn(t, target, user, pwCred(initial), "initial password")

			for i := range 2 {
				res, err := e.eng.Rotate(e.ctx, origin, id)
				if err != nil || res.Outcome != Rotated {
					t.Fatalf("Rotate #%d = %+v, %v", i+1, res, err)
				}
			}
			cur := e.storedLogsIn(t, id, target, user, "after two rotations")
			if string(cur.Secret) == initial {
				t.Fatal("the stored credential is still the initial one")
			}
			e.mustRefuse(t, target, user, pwCred(initial), "the password before the rotations")
			a, err := e.vault.Account(e.ctx, id)
			if err != nil || a.CredentialVersion != 3 || a.Status != vault.StatusOK {
				t.Errorf("account after two rotations: version %d, status %q, %v", a.CredentialVersion, a.Status, err)
			}
		})
	}
}

// TestRealRecoverAfterCrash stages a pending version as a rotation does,
// puts the real target in each state a crash can leave it in, and lets a
// fresh engine (the restarted process) recover.
func TestRealRecoverAfterCrash(t *testing.T) {
	cases := []struct {
		name string
		// onTarget is the password the target holds after the "crash".
		onTarget func(current, pending string) string
		want     Outcome
	}{
		{"target not changed", func(cur, _ string) string { return cur }, Kept},
		{"target changed", func(_, pending string) string { return pending }, Rotated},
		{"changed outside Warder", func(string, string) string { return randomPassword() }, Reset},
	}
	for _, s := range systems {
		t.Run(s.name, func(t *testing.T) {
			sys := s.make(t)
			e := newRealEnv(t, testenv.SQLite(t))
			target := e.addTarget(t, sys)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					current := randomPassword()
					id, user := e.addAccount(t, sys, target, current)
					e.mustRefuse(t, target, user, pwCred("not-"+current), "wrong password")

					pending := randomPassword()
					if _, err := e.vault.StagePending(e.ctx, origin, id, pwCred(pending)); err != nil {
						t.Fatal(err)
					}
					if p := c.onTarget(current, pending); p != current {
						sys.setOutside(t, user, p)
					}

					results, err := e.newEngine(t, 0).RecoverAll(e.ctx)
					if err != nil || len(results) != 1 || results[0].Outcome != c.want {
						t.Fatalf("RecoverAll = %+v, %v; want one %s", results, err, c.want)
					}
					cur := e.storedLogsIn(t, id, target, user, "after recovery")
					want := current
					if c.want != Kept {
						want = pending
					}
					if string(cur.Secret) != want {
						t.Errorf("stored credential after %s is not the expected one", c.want)
					}
				})
			}
		})
	}
}

func TestRealVerifyDetectsDrift(t *testing.T) {
	for _, s := range systems {
		t.Run(s.name, func(t *testing.T) {
			sys := s.make(t)
			e := newRealEnv(t, testenv.SQLite(t))
			target := e.addTarget(t, sys)
			initial := randomPassword()
			id, user := e.addAccount(t, sys, target, initial)
			e.mustRefuse(t, target, user, pwCred("not-"+initial), "wrong password")

			if ok, err := e.eng.Verify(e.ctx, origin, id); !ok || err != nil {
				t.Fatalf("Verify = %v, %v; want true", ok, err)
			}
			sys.setOutside(t, user, randomPassword())
			if ok, err := e.eng.Verify(e.ctx, origin, id); ok || err != nil {
				t.Fatalf("Verify after a change outside Warder = %v, %v; want false, nil", ok, err)
			}
			if a, _ := e.vault.Account(e.ctx, id); a.Status != vault.StatusOutOfSync {
				t.Errorf("status after drift = %q, want out_of_sync", a.Status)
			}
			evs, err := e.audit.List(e.ctx, audit.Filter{Action: "account.out_of_sync", Limit: 10})
			if err != nil || len(evs) == 0 {
				t.Errorf("no account.out_of_sync audit event (%v)", err)
			}
			// The management account repairs it.
			if res, err := e.eng.Rotate(e.ctx, origin, id); err != nil || res.Outcome != Rotated {
				t.Fatalf("Rotate after drift = %+v, %v", res, err)
			}
			e.storedLogsIn(t, id, target, user, "after the repair")
			if a, _ := e.vault.Account(e.ctx, id); a.Status != vault.StatusOK {
				t.Errorf("status after the repair = %q, want ok", a.Status)
			}
		})
	}
}

// An SSH key account: the new key logs in, the old one is refused and
// gone from authorized_keys, other keys stay.
func TestRealRotateSSHKey(t *testing.T) {
	sys := linuxSystem(t)
	e := newRealEnv(t, testenv.SQLite(t))
	target := e.addTarget(t, sys)
	u := testenv.LinuxUser(t, "")
	oldPriv, oldPub := testenv.NewSSHKey(t)
	_, otherPub := testenv.NewSSHKey(t)
	testenv.AuthorizeKeys(t, u, otherPub, oldPub)
	old := connector.Credential{Kind: connector.SSHKey, Secret: oldPriv, PublicKey: oldPub}
	a, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: target, Username: u.Username, Kind: connector.SSHKey, Credential: &old})
	if err != nil {
		t.Fatal(err)
	}
	stranger, strangerPub := testenv.NewSSHKey(t)
	e.mustRefuse(t, target, u.Username, connector.Credential{Kind: connector.SSHKey, Secret: stranger, PublicKey: strangerPub}, "unauthorised key")
	e.mustLogIn(t, target, u.Username, old, "old key before the rotation")

	res, err := e.eng.Rotate(e.ctx, origin, a.ID)
	if err != nil || res.Outcome != Rotated {
		t.Fatalf("Rotate = %+v, %v", res, err)
	}
	cur := e.storedLogsIn(t, a.ID, target, u.Username, "after the key rotation")
	if cur.PublicKey == oldPub {
		t.Fatal("the stored key is still the old one")
	}
	e.mustRefuse(t, target, u.Username, old, "the old key after the rotation")
	keys, err := os.ReadFile(filepath.Join(u.HomeDir, ".ssh", "authorized_keys"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(keys), keyBlob(oldPub)) || !strings.Contains(string(keys), keyBlob(otherPub)) || !strings.Contains(string(keys), keyBlob(cur.PublicKey)) {
		t.Errorf("authorized_keys after the rotation:\n%s\nwant the other key and the new one, not the old one", keys)
	}

	// A crash after the new key was authorised but before the promotion:
	// recovery promotes it and retires the old key.
	next, err := linux.New().Generate(e.ctx, connector.SSHKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.vault.StagePending(e.ctx, origin, a.ID, next); err != nil {
		t.Fatal(err)
	}
	testenv.AuthorizeKeys(t, u, otherPub, cur.PublicKey, next.PublicKey)
	results, err := e.newEngine(t, 0).RecoverAll(e.ctx)
	if err != nil || len(results) != 1 || results[0].Outcome != Rotated {
		t.Fatalf("RecoverAll = %+v, %v", results, err)
	}
	e.storedLogsIn(t, a.ID, target, u.Username, "after recovering a key rotation")
	e.mustRefuse(t, target, u.Username, cur, "the key before the interrupted rotation")
}

// keyBlob is the base64 part of an authorized_keys line.
func keyBlob(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	return f[1]
}

// A PostgreSQL account whose password an application on a linux host keeps
// in an env file: the rotation rewrites the line and runs the restart
// command; a dependent that cannot be updated is reported.
func TestRealDependentEnvFile(t *testing.T) {
	pg := postgresSystem(t)
	lx := linuxSystem(t)
	e := newRealEnv(t, testenv.SQLite(t))
	pgTarget := e.addTarget(t, pg)
	host := e.addTarget(t, lx)

	app := testenv.LinuxUser(t, "")
	envFile := filepath.Join(app.HomeDir, "app.env")
	restarted := filepath.Join(app.HomeDir, "restarted")
	initial := randomPassword()
	if err := os.WriteFile(envFile, []byte("APP_MODE=prod\nDB_PASSWORD="+initial+"\nDB_USER=x\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(app.Uid)
	gid, _ := strconv.Atoi(app.Gid)
	if err := os.Chown(envFile, uid, gid); err != nil {
		t.Fatal(err)
	}
	dep := vault.Dependent{Target: host, Path: envFile, Match: "^DB_PASSWORD=", Template: "DB_PASSWORD={{password}}", Restart: "touch " + restarted}
	id, user := e.addAccount(t, pg, pgTarget, initial, dep)
	e.mustRefuse(t, pgTarget, user, pwCred("not-"+initial), "wrong password")

	res, err := e.eng.Rotate(e.ctx, origin, id)
	if err != nil || res.Outcome != Rotated || len(res.FailedDependents) != 0 {
		t.Fatalf("Rotate = %+v, %v", res, err)
	}
	cur := e.storedLogsIn(t, id, pgTarget, user, "after the rotation")
	got, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := "APP_MODE=prod\nDB_PASSWORD=" + string(cur.Secret) + "\nDB_USER=x\n"; string(got) != want {
		t.Errorf("env file after the rotation does not hold the new password in place of the old line")
	}
	if fi, err := os.Stat(envFile); err != nil || fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
		t.Errorf("env file lost its mode or owner: %v", err)
	}
	if _, err := os.Stat(restarted); err != nil {
		t.Errorf("the restart command did not run: %v", err)
	}
	// The application's copy logs in.
	e.mustLogIn(t, pgTarget, user, pwCred(strings.TrimPrefix(strings.Split(string(got), "\n")[1], "DB_PASSWORD=")), "the env file's password")

	// A dependent that cannot be written is reported; the rotation stands.
	os.Remove(restarted)
	os.Remove(envFile)
	res, err = e.eng.Rotate(e.ctx, origin, id)
	if err != nil || res.Outcome != Rotated || len(res.FailedDependents) != 1 {
		t.Fatalf("Rotate with a missing env file = %+v, %v; want rotated with one failed dependent", res, err)
	}
	cur = e.storedLogsIn(t, id, pgTarget, user, "after a rotation with a failed dependent")
	if strings.Contains(res.FailedDependents[0], string(cur.Secret)) {
		t.Error("the failed dependent's report holds the password")
	}
	evs, err := e.audit.List(e.ctx, audit.Filter{Action: "account.dependents", Limit: 10})
	if err != nil || len(evs) != 2 || evs[1].Outcome != audit.OutcomeFailure {
		t.Errorf("account.dependents events = %+v, %v; want a success then a failure", evs, err)
	}
}

// A process killed mid-rotation leaves its claim behind. On SQLite, which
// only one process can open, the restarted server's Run releases it and
// recovers at once rather than after ClaimTTL; on PostgreSQL, shared by
// live processes, the claim is left to expire.
func TestRunRecoversClaimOfDeadProcess(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			e := newEnv(t, be.Open(t), nil)
			e.setup(t, true)
			if ok, err := e.vault.ClaimRotation(e.ctx, "t1/app", "deadhost/4242/cafe#1", time.Hour); !ok || err != nil {
				t.Fatalf("ClaimRotation = %v, %v", ok, err)
			}
			if _, err := e.vault.StagePending(e.ctx, origin, "t1/app", *pw("pending-password-xyz")); err != nil {
				t.Fatal(err)
			}
			e.mem.set("app", "pending-password-xyz") // the change reached the target

			eng, err := New(Config{Vault: e.vault, Connectors: connector.Registry{"mem": e.mem}, Audit: e.audit, ClaimTTL: time.Hour, ScheduleInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(e.ctx)
			done := make(chan struct{})
			go func() { eng.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			deadline := time.Now().Add(5 * time.Second)
			for {
				_, _, pending, err := e.vault.PendingCredential(e.ctx, "t1/app")
				if err != nil {
					t.Fatal(err)
				}
				if be.Name == "postgres" {
					// Another live process may hold the claim: nothing happens.
					time.Sleep(300 * time.Millisecond)
					if _, _, pending, _ = e.vault.PendingCredential(e.ctx, "t1/app"); !pending {
						t.Fatal("a claim on a shared PostgreSQL store was taken over before it expired")
					}
					return
				}
				if !pending {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the dead process's claim still blocks recovery 5s after the start")
				}
				time.Sleep(10 * time.Millisecond)
			}
			e.consistent(t, "t1/app", "app")
		})
	}
}

// Rotating a whole target rotates its management account too; the other
// accounts, changed through it, must not fail because it changed under
// them.
func TestRealRotateTargetWithManagement(t *testing.T) {
	sys := postgresSystem(t)
	e := newRealEnv(t, testenv.SQLite(t))
	target := e.addTarget(t, sys)
	users := map[string]string{target + "/" + sys.mgmtUser: sys.mgmtUser}
	for range 12 {
		id, user := e.addAccount(t, sys, target, randomPassword())
		users[id] = user
	}
	for round := range 3 {
		results, err := e.eng.RotateTarget(e.ctx, origin, target)
		if err != nil {
			t.Fatalf("round %d: RotateTarget: %v", round, err)
		}
		for _, r := range results {
			if r.Outcome != Rotated {
				t.Errorf("round %d: %s: %s", round, r.Account, r.Outcome)
			}
		}
	}
	for id, user := range users {
		e.storedLogsIn(t, id, target, user, "after rotating the target")
	}
}

// TestRealInitializeRefused: `account add --generate` of a PostgreSQL
// superuser on a target whose management role has CREATEROLE but is not
// a superuser. PostgreSQL refuses the change (SQLSTATE 42501); the add is
// undone, the error names the category without the server's words, the
// superuser's password is untouched, and the failure is audited.
func TestRealInitializeRefused(t *testing.T) {
	sys := postgresSystem(t)
	e := newRealEnv(t, testenv.SQLite(t))
	target := e.addTarget(t, sys)
	c := testenv.PostgresSCRAM(t)
	superPW := randomPassword()
	super := c.CreateRole(t, superPW, "SUPERUSER")
	if _, err := e.vault.AddAccount(e.ctx, origin, vault.AccountSpec{Target: target, Username: super}); err != nil {
		t.Fatal(err)
	}
	id := target + "/" + super
	o := audit.Origin{Actor: "user:admin", Source: "192.0.2.1", RequestID: "req-gen"}
	_, err := e.eng.Initialize(e.ctx, o, id)
	if err == nil {
		t.Fatal("Initialize of a superuser through a CREATEROLE role succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "permission denied (SQLSTATE 42501)") || !strings.Contains(msg, "the account was not added") ||
		strings.Contains(msg, "superuser") || strings.Contains(msg, "ALTER") || strings.Contains(msg, "SCRAM") {
		t.Errorf("error %q", msg)
	}
	if _, err := e.vault.Account(e.ctx, id); err == nil {
		t.Error("the account is still in the vault")
	}
	e.mustLogIn(t, target, super, pwCred(superPW), "the superuser's own password")
	evs, err := e.audit.List(e.ctx, audit.Filter{Action: "account.rotate", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Outcome != audit.OutcomeFailure || evs[0].Details["error"] != "permission denied (SQLSTATE 42501)" ||
		evs[0].Source != "192.0.2.1" {
		t.Errorf("account.rotate events %+v", evs)
	}
}
