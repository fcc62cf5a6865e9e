package vault

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/connector"
	linuxconn "github.com/warderhq/warder/internal/connector/linux"
	pgconn "github.com/warderhq/warder/internal/connector/postgres"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestNewConfig(t *testing.T) {
	db := testenv.SQLite(t)
	e := newEnv(t, db, envOpts{})
	base := Config{DB: db, Audit: e.audit, Barrier: e.barrier, Authz: e.authz}
	for name, tweak := range map[string]func(*Config){
		"no db":        func(c *Config) { c.DB = nil },
		"no audit":     func(c *Config) { c.Audit = nil },
		"no barrier":   func(c *Config) { c.Barrier = nil },
		"no authz":     func(c *Config) { c.Authz = nil },
		"negative ttl": func(c *Config) { c.DefaultLeaseTTL = -1 },
		"max < ttl":    func(c *Config) { c.DefaultLeaseTTL, c.MaxLeaseTTL = 2*time.Hour, time.Hour },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			tweak(&cfg)
			_, err := New(e.ctx, cfg)
			wantKind(t, "New", err, errkind.Invalid)
		})
	}
}

func TestTargets(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		v := e.vault
		good := TargetSpec{Name: "db1", Kind: "postgres", Host: "db1.example.com", Port: 5432,
			Options: map[string]string{"sslmode": "disable"}, ManagementAccount: "postgres",
			PasswordPolicy: &PasswordPolicy{Length: 20, Forbidden: "'\""}}
		tg, err := v.AddTarget(e.ctx, admin, good)
		if err != nil {
			t.Fatal(err)
		}
		if tg.MaxConcurrentRotations != 4 || tg.CreatedAt != e.clock.Now() {
			t.Errorf("AddTarget = %+v", tg)
		}
		for name, spec := range map[string]TargetSpec{
			"bad name":     {Name: "DB", Kind: "postgres", Host: "h", Port: 1},
			"long name":    {Name: strings.Repeat("a", 65), Kind: "postgres", Host: "h", Port: 1},
			"bad kind":     {Name: "x", Kind: "oracle", Host: "h", Port: 1},
			"no host":      {Name: "x", Kind: "postgres", Port: 1},
			"bad port":     {Name: "x", Kind: "postgres", Host: "h", Port: 70000},
			"bad mgmt":     {Name: "x", Kind: "postgres", Host: "h", Port: 1, ManagementAccount: "a b"},
			"bad option":   {Name: "x", Kind: "postgres", Host: "h", Port: 1, Options: map[string]string{"A B": "1"}},
			"bad policy":   {Name: "x", Kind: "postgres", Host: "h", Port: 1, PasswordPolicy: &PasswordPolicy{Length: 5}},
			"bad rotation": {Name: "x", Kind: "postgres", Host: "h", Port: 1, MaxConcurrentRotations: 100},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := v.AddTarget(e.ctx, admin, spec)
				wantKind(t, "AddTarget", err, errkind.Invalid)
			})
		}
		_, err = v.AddTarget(e.ctx, admin, good)
		wantKind(t, "AddTarget twice", err, errkind.Conflict)

		got, err := v.Target(e.ctx, "db1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Options["sslmode"] != "disable" || got.PasswordPolicy == nil || got.PasswordPolicy.Length != 20 ||
			!got.PasswordPolicy.Lower || got.ManagementAccount != "postgres" {
			t.Errorf("Target = %+v", got)
		}
		if c := got.Connector(); c.Addr() != "db1.example.com:5432" || c.Kind != "postgres" || c.Options["sslmode"] != "disable" {
			t.Errorf("Connector = %+v", c)
		}
		e.addTarget(t, "db2")
		all, err := v.Targets(e.ctx)
		if err != nil || len(all) != 2 || all[0].Name != "db1" || all[1].Name != "db2" {
			t.Fatalf("Targets = %v, %v", all, err)
		}
		_, err = v.Target(e.ctx, "nope")
		wantKind(t, "Target", err, errkind.NotFound)

		e.addAccount(t, "db1", "app", "pw-1234567890", 1)
		wantKind(t, "RemoveTarget with accounts", v.RemoveTarget(e.ctx, admin, "db1"), errkind.Conflict)
		if err := v.RemoveAccount(e.ctx, admin, "db1/app"); err != nil {
			t.Fatal(err)
		}
		if err := v.RemoveTarget(e.ctx, admin, "db1"); err != nil {
			t.Fatal(err)
		}
		wantKind(t, "RemoveTarget again", v.RemoveTarget(e.ctx, admin, "db1"), errkind.NotFound)
		if n := len(e.eventsOf(t, "target.add")); n != 2 {
			t.Errorf("%d target.add events, want 2", n)
		}
		if n := len(e.eventsOf(t, "target.remove")); n != 1 {
			t.Errorf("%d target.remove events, want 1", n)
		}
	})
}

func TestAccounts(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		v := e.vault
		if _, err := v.AddTarget(e.ctx, admin, TargetSpec{Name: "db1", Kind: "postgres", Host: "h", Port: 5432,
			PasswordPolicy: &PasswordPolicy{Length: 16, Digits: true}}); err != nil {
			t.Fatal(err)
		}
		e.addTarget(t, "web")
		no := false
		a, err := v.AddAccount(e.ctx, admin, AccountSpec{Target: "db1", Username: "app", Credential: password("s3cret-initial"),
			RotateOnCheckin: &no, RotateEvery: 24 * time.Hour,
			Dependents: []Dependent{{Target: "web", Path: "/etc/app.env", Match: `^DB_PASSWORD=`, Template: "DB_PASSWORD={{password}}", Restart: "systemctl restart app"}}})
		if err != nil {
			t.Fatal(err)
		}
		if a.ID != "db1/app" || a.MaxCheckouts != 1 || a.RotateOnCheckin || a.Kind != connector.Password || a.Status != StatusUnverified ||
			a.CredentialVersion != 1 || a.HasPending || !a.NextRotationAt.Equal(e.clock.Now().Add(24*time.Hour)) || len(a.Dependents) != 1 {
			t.Errorf("AddAccount = %+v", a)
		}
		if p := v.EffectivePolicy(a); p.Length != 16 || !p.Digits || p.Lower {
			t.Errorf("EffectivePolicy (target's) = %+v", p)
		}
		if d := a.Dependents[0].Render([]byte("NEW")); d.Line != "DB_PASSWORD=NEW" || d.Path != "/etc/app.env" {
			t.Errorf("Render = %+v", d)
		}

		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"rotate_every":"24h0m0s"`) || strings.Contains(string(b), "s3cret") {
			t.Errorf("JSON = %s", b)
		}
		var back Account
		if err := json.Unmarshal(b, &back); err != nil || back.RotateEvery != 24*time.Hour || back.ID != a.ID {
			t.Errorf("round trip = %+v, %v", back, err)
		}

		for name, spec := range map[string]AccountSpec{
			"bad user":        {Target: "db1", Username: "a b"},
			"bad kind":        {Target: "db1", Username: "x", Kind: "token"},
			"cred mismatch":   {Target: "db1", Username: "x", Credential: &connector.Credential{Kind: connector.APIKey, Secret: []byte("k")}},
			"empty cred":      {Target: "db1", Username: "x", Credential: &connector.Credential{}},
			"ssh no pub":      {Target: "db1", Username: "x", Kind: connector.SSHKey, Credential: &connector.Credential{Secret: []byte("k")}},
			"max checkouts":   {Target: "db1", Username: "x", MaxCheckouts: -1},
			"rotate too fast": {Target: "db1", Username: "x", RotateEvery: time.Second},
			"bad dependent":   {Target: "db1", Username: "x", Dependents: []Dependent{{Target: "web", Path: "rel", Match: "x", Template: "{{password}}"}}},
			"no placeholder":  {Target: "db1", Username: "x", Dependents: []Dependent{{Target: "web", Path: "/a", Match: "x", Template: "x"}}},
			"bad regexp":      {Target: "db1", Username: "x", Dependents: []Dependent{{Target: "web", Path: "/a", Match: "(", Template: "{{password}}"}}},
			"bad policy":      {Target: "db1", Username: "x", PasswordPolicy: &PasswordPolicy{Length: 500}},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := v.AddAccount(e.ctx, admin, spec)
				wantKind(t, "AddAccount", err, errkind.Invalid)
			})
		}
		_, err = v.AddAccount(e.ctx, admin, AccountSpec{Target: "nope", Username: "x"})
		wantKind(t, "unknown target", err, errkind.NotFound)
		_, err = v.AddAccount(e.ctx, admin, AccountSpec{Target: "db1", Username: "x",
			Dependents: []Dependent{{Target: "nope", Path: "/a", Match: "x", Template: "{{password}}"}}})
		wantKind(t, "unknown dependent target", err, errkind.NotFound)
		_, err = v.AddAccount(e.ctx, admin, AccountSpec{Target: "db1", Username: "app"})
		wantKind(t, "duplicate", err, errkind.Conflict)

		// An account without a credential yet, with its own policy.
		k, err := v.AddAccount(e.ctx, admin, AccountSpec{Target: "web", Username: "root", PasswordPolicy: &PasswordPolicy{Length: 40}})
		if err != nil {
			t.Fatal(err)
		}
		if k.CredentialVersion != 0 || v.EffectivePolicy(k).Length != 40 || !v.EffectivePolicy(k).Symbols {
			t.Errorf("account without credential = %+v", k)
		}
		_, _, err = v.CurrentCredential(e.ctx, "web/root")
		wantKind(t, "CurrentCredential without one", err, errkind.NotFound)
		e.addAccount(t, "web", "deploy", "pw-web-deploy", 1)
		if p := v.EffectivePolicy(mustAccount(t, e, "web/deploy")); p != DefaultPasswordPolicy() {
			t.Errorf("EffectivePolicy default = %+v", p)
		}

		list, err := v.Accounts(e.ctx, "web")
		if err != nil || len(list) != 2 || list[0].ID != "web/deploy" || list[1].ID != "web/root" {
			t.Fatalf("Accounts(web) = %v, %v", list, err)
		}
		if all, _ := v.Accounts(e.ctx, ""); len(all) != 3 {
			t.Errorf("Accounts() = %d accounts, want 3", len(all))
		}

		three, every, yes := 3, time.Duration(0), true
		u, err := v.UpdateAccount(e.ctx, admin, "db1/app", AccountUpdate{MaxCheckouts: &three, RotateEvery: &every, RotateOnCheckin: &yes,
			PasswordPolicy: &PasswordPolicy{Length: 64}})
		if err != nil {
			t.Fatal(err)
		}
		if u.MaxCheckouts != 3 || u.RotateEvery != 0 || !u.NextRotationAt.IsZero() || !u.RotateOnCheckin || v.EffectivePolicy(u).Length != 64 {
			t.Errorf("UpdateAccount = %+v", u)
		}
		u, err = v.UpdateAccount(e.ctx, admin, "db1/app", AccountUpdate{ClearPasswordPolicy: true})
		if err != nil || u.PasswordPolicy != nil {
			t.Errorf("clear policy = %+v, %v", u, err)
		}
		zero := 0
		_, err = v.UpdateAccount(e.ctx, admin, "db1/app", AccountUpdate{MaxCheckouts: &zero})
		wantKind(t, "UpdateAccount max 0", err, errkind.Invalid)
		_, err = v.UpdateAccount(e.ctx, admin, "db1/nope", AccountUpdate{MaxCheckouts: &three})
		wantKind(t, "UpdateAccount unknown", err, errkind.NotFound)

		// Removal is refused while checked out.
		if _, err := e.checkout(e.ctx, "db1/app", "alice", false); err != nil {
			t.Fatal(err)
		}
		wantKind(t, "RemoveAccount leased", v.RemoveAccount(e.ctx, admin, "db1/app"), errkind.Conflict)
		if _, err := v.Checkin(e.ctx, admin, user("alice"), "db1/app"); err != nil {
			t.Fatal(err)
		}
		if err := v.RemoveAccount(e.ctx, admin, "db1/app"); err != nil {
			t.Fatal(err)
		}
		_, err = v.Account(e.ctx, "db1/app")
		wantKind(t, "Account removed", err, errkind.NotFound)
		var n int
		if err := e.db.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM vault_credentials WHERE account_id = 'db1/app'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d credentials left after removal (%v)", n, err)
		}
	})
}

func mustAccount(t testing.TB, e *env, id string) Account {
	t.Helper()
	a, err := e.vault.Account(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestTargetCheckedByConnector: with Connectors configured, a target whose
// options its connector refuses (an unknown option, a linux target with no
// host key) is refused when it is added, not when it is first used.
func TestTargetCheckedByConnector(t *testing.T) {
	reg := connector.Registry{"postgres": pgconn.New(), "linux": linuxconn.New()}
	e := newEnv(t, testenv.SQLite(t), envOpts{tweak: func(c *Config) { c.Connectors = reg }})
	for name, spec := range map[string]TargetSpec{
		"unknown option": {Name: "x", Kind: "postgres", Host: "h", Port: 5432, Options: map[string]string{"dbname": "app"}},
		"bad sslmode":    {Name: "x", Kind: "postgres", Host: "h", Port: 5432, Options: map[string]string{"sslmode": "sometimes"}},
		"no host key":    {Name: "x", Kind: "linux", Host: "h", Port: 22},
		"other kind":     {Name: "x", Kind: "redis", Host: "h", Port: 6379},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.vault.AddTarget(e.ctx, admin, spec)
			wantKind(t, "AddTarget", err, errkind.Invalid)
		})
	}
	spec := TargetSpec{Name: "db1", Kind: "postgres", Host: "h", Port: 5432, Options: map[string]string{"database": "app", "sslmode": "require"}}
	if _, err := e.vault.AddTarget(e.ctx, admin, spec); err != nil {
		t.Fatalf("AddTarget with valid options: %v", err)
	}
}
