package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

// ephemeralFixture is what an access role would rely on: a table the
// role grants SELECT on, a table it grants nothing on, the role itself,
// and a management account with only CREATEROLE.
type ephemeralFixture struct {
	c                  *testenv.SCRAMCluster
	tgt                connector.Target
	as                 connector.Login
	id                 string // unique per fixture
	table, other, role string
}

func newEphemeralFixture(t *testing.T) *ephemeralFixture {
	t.Helper()
	c := testenv.PostgresSCRAM(t)
	id := fmt.Sprintf("%010x", rand.Uint64()>>24)
	f := &ephemeralFixture{c: c, tgt: scramTarget(c), id: id,
		table: "wt_t_" + id, other: "wt_o_" + id, role: "wt_read_" + id}
	mgmtPassword := "mgmt-" + id
	f.as = connector.Login{Username: c.CreateRole(t, mgmtPassword, "CREATEROLE"), Credential: pw(mgmtPassword)}
	c.Exec(t, "CREATE TABLE "+f.table+" (x int)")
	c.Exec(t, "INSERT INTO "+f.table+" VALUES (42)")
	c.Exec(t, "CREATE TABLE "+f.other+" (x int)")
	c.Exec(t, "CREATE ROLE "+f.role+" NOLOGIN")
	c.Exec(t, "GRANT SELECT ON "+f.table+" TO "+f.role)
	t.Cleanup(func() {
		c.Exec(t, "DROP TABLE IF EXISTS "+f.table+", "+f.other)
		c.Exec(t, "DROP ROLE IF EXISTS "+f.role)
	})
	return f
}

// spec returns a spec for a new ephemeral user, dropped (by the cluster's
// superuser) when t ends.
func (f *ephemeralFixture) spec(t *testing.T, name string, roles ...string) connector.EphemeralSpec {
	t.Cleanup(func() { f.c.Exec(t, "DROP ROLE IF EXISTS "+name) })
	return connector.EphemeralSpec{Username: name, Password: []byte("eph-" + name),
		ValidUntil: time.Now().Add(time.Hour), Roles: roles}
}

func (f *ephemeralFixture) create(t *testing.T, spec connector.EphemeralSpec) {
	t.Helper()
	if err := New().CreateEphemeral(context.Background(), f.tgt, f.as, spec); err != nil {
		t.Fatalf("CreateEphemeral(%s): %v", spec.Username, err)
	}
}

func (f *ephemeralFixture) roleExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	if err := f.c.QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// session logs in as the ephemeral user and keeps the connection open.
func (f *ephemeralFixture) session(t *testing.T, spec connector.EphemeralSpec) *pgx.Conn {
	t.Helper()
	conn, err := connect(context.Background(), f.tgt, spec.Username, string(spec.Password))
	if err != nil {
		t.Fatalf("log in as %s: %v", spec.Username, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// mustBeDenied runs stmt and requires SQLSTATE 42501 (insufficient_privilege).
func mustBeDenied(t *testing.T, conn *pgx.Conn, stmt string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), stmt); sqlState(err) != codeInsufficientPrivilege {
		t.Fatalf("%s = %v, want permission denied (42501)", stmt, err)
	}
}

func TestEphemeralValidation(t *testing.T) {
	tgt := connector.Target{Kind: Kind, Name: "closed", Host: "127.0.0.1", Port: testenv.UnusedPort(t)}
	as := connector.Login{Username: "mgmt", Credential: pw("mgmt")}
	ok := connector.EphemeralSpec{Username: "wjit_1", Password: []byte("secret-pw"),
		ValidUntil: time.Now().Add(time.Hour), Roles: []string{"app_read", "Mixed_Case"}}
	tests := []struct {
		name   string
		mutate func(*connector.EphemeralSpec)
	}{
		{"empty name", func(s *connector.EphemeralSpec) { s.Username = "" }},
		{"upper case name", func(s *connector.EphemeralSpec) { s.Username = "Wjit_1" }},
		{"leading digit", func(s *connector.EphemeralSpec) { s.Username = "1wjit" }},
		{"quote in name", func(s *connector.EphemeralSpec) { s.Username = `wjit"; DROP ROLE x; --` }},
		{"dash in name", func(s *connector.EphemeralSpec) { s.Username = "wjit-1" }},
		{"64 characters", func(s *connector.EphemeralSpec) { s.Username = "w" + strings.Repeat("x", 63) }},
		{"reserved pg_", func(s *connector.EphemeralSpec) { s.Username = "pg_wjit" }},
		{"management account", func(s *connector.EphemeralSpec) { s.Username = "mgmt" }},
		{"bad role", func(s *connector.EphemeralSpec) { s.Roles = []string{`app"read`} }},
		{"role with space", func(s *connector.EphemeralSpec) { s.Roles = []string{"app read"} }},
		{"public", func(s *connector.EphemeralSpec) { s.Roles = []string{"PUBLIC"} }},
		{"itself", func(s *connector.EphemeralSpec) { s.Roles = []string{"wjit_1"} }},
		{"empty password", func(s *connector.EphemeralSpec) { s.Password = nil }},
		{"unstable password", func(s *connector.EphemeralSpec) { s.Password = []byte("soft\u00adhyphen") }},
		{"no expiry", func(s *connector.EphemeralSpec) { s.ValidUntil = time.Time{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := ok
			tt.mutate(&spec)
			err := New().CreateEphemeral(context.Background(), tgt, as, spec)
			if !errkind.Is(err, errkind.Invalid) {
				t.Fatalf("CreateEphemeral = %v, want Invalid (before dialing)", err)
			}
		})
	}
	t.Run("drop bad name", func(t *testing.T) {
		if err := New().DropEphemeral(context.Background(), tgt, as, "x'y"); !errkind.Is(err, errkind.Invalid) {
			t.Fatalf("DropEphemeral = %v, want Invalid", err)
		}
	})
	t.Run("list empty prefix", func(t *testing.T) {
		if _, err := New().ListEphemeral(context.Background(), tgt, as, ""); !errkind.Is(err, errkind.Invalid) {
			t.Fatalf("ListEphemeral = %v, want Invalid", err)
		}
	})
	t.Run("valid spec dials", func(t *testing.T) {
		err := New().CreateEphemeral(context.Background(), tgt, as, ok)
		if !errkind.Is(err, errkind.Unavailable) {
			t.Fatalf("CreateEphemeral on a closed port = %v, want Unavailable", err)
		}
	})
}

// TestEphemeralLifecycle: the user exists during the grant, can do what the
// role grants and nothing more, and is gone afterwards, its open session
// with it.
func TestEphemeralLifecycle(t *testing.T) {
	f := newEphemeralFixture(t)
	ctx := context.Background()
	spec := f.spec(t, "wjit_"+f.id, f.role)
	mustRefuse(t, f.tgt, spec.Username, string(spec.Password)) // not there yet
	f.create(t, spec)

	mustRefuse(t, f.tgt, spec.Username, "wrong-"+string(spec.Password))
	mustLogIn(t, f.tgt, spec.Username, string(spec.Password))
	var stored string
	var until time.Time
	if err := f.c.QueryRow(ctx, "SELECT rolpassword, rolvaliduntil FROM pg_authid WHERE rolname = $1", spec.Username).Scan(&stored, &until); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$4096:") {
		t.Fatalf("stored password %q is not a SCRAM verifier", stored)
	}
	if d := until.Sub(spec.ValidUntil); d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("VALID UNTIL = %v, want %v", until, spec.ValidUntil)
	}

	conn := f.session(t, spec)
	t.Run("can do what the role grants", func(t *testing.T) {
		var x int
		if err := conn.QueryRow(ctx, "SELECT x FROM "+f.table).Scan(&x); err != nil || x != 42 {
			t.Fatalf("SELECT from the granted table = %d, %v", x, err)
		}
	})
	t.Run("and nothing more", func(t *testing.T) {
		mustBeDenied(t, conn, "INSERT INTO "+f.table+" VALUES (1)")
		mustBeDenied(t, conn, "SELECT x FROM "+f.other)
		mustBeDenied(t, conn, "CREATE TABLE wt_eph_"+f.id+" (x int)")
		mustBeDenied(t, conn, "CREATE ROLE wt_eph_"+f.id)
	})

	t.Run("create again is idempotent", func(t *testing.T) {
		f.create(t, spec)
		mustLogIn(t, f.tgt, spec.Username, string(spec.Password))
	})
	t.Run("create again updates password and roles", func(t *testing.T) {
		next := spec
		next.Password = []byte("rotated-" + string(spec.Password))
		next.Roles = nil
		f.create(t, next)
		mustRefuse(t, f.tgt, spec.Username, string(spec.Password))
		mustLogIn(t, f.tgt, spec.Username, string(next.Password))
		mustBeDenied(t, conn, "SELECT x FROM "+f.table) // membership revoked
		f.create(t, spec)
		mustLogIn(t, f.tgt, spec.Username, string(spec.Password))
	})

	t.Run("drop terminates the open session", func(t *testing.T) {
		if err := New().DropEphemeral(ctx, f.tgt, f.as, spec.Username); err != nil {
			t.Fatalf("DropEphemeral: %v", err)
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatal("the dropped user's open session still answers")
		}
		if f.roleExists(t, spec.Username) {
			t.Fatal("the role still exists")
		}
		mustRefuse(t, f.tgt, spec.Username, string(spec.Password))
	})
	t.Run("drop of a missing user", func(t *testing.T) {
		if err := New().DropEphemeral(ctx, f.tgt, f.as, spec.Username); err != nil {
			t.Fatalf("DropEphemeral again: %v", err)
		}
	})
}

func TestEphemeralValidUntil(t *testing.T) {
	f := newEphemeralFixture(t)
	spec := f.spec(t, "wjit_past_"+f.id, f.role)
	spec.ValidUntil = time.Now().Add(-time.Minute)
	f.create(t, spec)
	mustRefuse(t, f.tgt, spec.Username, string(spec.Password))

	spec.ValidUntil = time.Now().Add(time.Minute) // a retry with a new expiry is honoured too
	f.create(t, spec)
	mustLogIn(t, f.tgt, spec.Username, string(spec.Password))
}

// TestEphemeralForeignRole: a role Warder did not create is neither taken
// over nor dropped, whatever its name.
func TestEphemeralForeignRole(t *testing.T) {
	f := newEphemeralFixture(t)
	ctx := context.Background()
	foreign := f.c.CreateRole(t, "own-password", "")
	spec := connector.EphemeralSpec{Username: foreign, Password: []byte("takeover"), ValidUntil: time.Now().Add(time.Hour)}

	err := New().CreateEphemeral(ctx, f.tgt, f.as, spec)
	if !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("CreateEphemeral over a foreign role = %v, want Conflict", err)
	}
	if strings.Contains(err.Error(), "takeover") {
		t.Fatalf("error repeats the password: %v", err)
	}
	mustLogIn(t, f.tgt, foreign, "own-password")

	if err := New().DropEphemeral(ctx, f.tgt, f.as, foreign); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("DropEphemeral of a foreign role = %v, want Conflict", err)
	}
	if !f.roleExists(t, foreign) {
		t.Fatal("the foreign role was dropped")
	}
	mustLogIn(t, f.tgt, foreign, "own-password")
}

func TestEphemeralMissingRole(t *testing.T) {
	f := newEphemeralFixture(t)
	spec := f.spec(t, "wjit_"+f.id, f.role, "wt_no_such_role_"+f.id)
	err := New().CreateEphemeral(context.Background(), f.tgt, f.as, spec)
	if !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("CreateEphemeral with a missing role = %v, want NotFound", err)
	}
	if f.roleExists(t, spec.Username) {
		t.Fatal("a failed CreateEphemeral left the user behind")
	}
}

// TestEphemeralDropOwnedObjects: objects the user made in the connection
// database go to the management account, and the drop succeeds.
func TestEphemeralDropOwnedObjects(t *testing.T) {
	f := newEphemeralFixture(t)
	ctx := context.Background()
	creator := "wt_create_" + f.id
	made := "wt_made_" + f.id
	f.c.Exec(t, "CREATE ROLE "+creator+" NOLOGIN")
	f.c.Exec(t, "GRANT CREATE ON SCHEMA public TO "+creator)
	t.Cleanup(func() {
		f.c.Exec(t, "DROP TABLE IF EXISTS "+made) // before the management account is dropped
		f.c.Exec(t, "REVOKE CREATE ON SCHEMA public FROM "+creator)
		f.c.Exec(t, "DROP ROLE IF EXISTS "+creator)
	})
	spec := f.spec(t, "wjit_"+f.id, creator)
	f.create(t, spec)
	conn := f.session(t, spec)
	if _, err := conn.Exec(ctx, "CREATE TABLE "+made+" (x int)"); err != nil {
		t.Fatalf("CREATE TABLE as the ephemeral user: %v", err)
	}
	if err := New().DropEphemeral(ctx, f.tgt, f.as, spec.Username); err != nil {
		t.Fatalf("DropEphemeral: %v", err)
	}
	if f.roleExists(t, spec.Username) {
		t.Fatal("the role still exists")
	}
	var owner string
	if err := f.c.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = $1", made).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner != f.as.Username {
		t.Fatalf("owner of %s = %s, want the management account %s", made, owner, f.as.Username)
	}
}

func TestEphemeralList(t *testing.T) {
	f := newEphemeralFixture(t)
	ctx := context.Background()
	p := "wjl" + f.id
	under, other := p+"_a", p+"xa" // '_' in a LIKE pattern would match the x
	for _, name := range []string{under, other} {
		f.create(t, f.spec(t, name))
	}
	unmarked := p + "_unmarked"
	f.c.Exec(t, "CREATE ROLE "+unmarked)
	t.Cleanup(func() { f.c.Exec(t, "DROP ROLE IF EXISTS "+unmarked) })

	tests := []struct {
		name   string
		prefix string
		want   []string
	}{
		{"plain prefix", p, []string{under, other}},
		{"underscore is literal", p + "_", []string{under}},
		{"percent is literal", p + "%", nil},
		{"percent inside", p[:3] + "%" + p[4:], nil},
		{"escape character", p + `\`, nil},
		{"no match", "wjl_no_such_" + f.id, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New().ListEphemeral(ctx, f.tgt, f.as, tt.prefix)
			if err != nil {
				t.Fatalf("ListEphemeral: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ListEphemeral(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
}
