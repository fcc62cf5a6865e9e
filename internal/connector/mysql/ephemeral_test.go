package mysql

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

// ephemeralFixture is what an access role would rely on: a database with a
// table the role grants SELECT on and one it grants nothing on, the role,
// and a management account with only the documented privileges.
type ephemeralFixture struct {
	s                      *testenv.MariaDBServer
	tgt                    connector.Target
	as                     connector.Login
	id                     string // unique per fixture
	db, table, other, role string
}

func newEphemeralFixture(t *testing.T) *ephemeralFixture {
	t.Helper()
	s := testenv.MariaDB(t)
	id := fmt.Sprintf("%010x", rand.Uint64()>>24)
	f := &ephemeralFixture{s: s, tgt: target(s, "%"), id: id, db: "wt_db_" + id, role: "wt_read_" + id}
	f.table, f.other = f.db+".t", f.db+".other"
	s.Exec(t, "CREATE DATABASE "+f.db)
	s.Exec(t, "CREATE ROLE "+f.role)
	t.Cleanup(func() {
		s.Exec(t, "DROP ROLE IF EXISTS "+f.role)
		s.Exec(t, "DROP DATABASE IF EXISTS "+f.db)
	})
	s.Exec(t, "CREATE TABLE "+f.table+" (x int)")
	s.Exec(t, "INSERT INTO "+f.table+" VALUES (42)")
	s.Exec(t, "CREATE TABLE "+f.other+" (x int)")
	s.Exec(t, "GRANT SELECT ON "+f.table+" TO "+f.role)

	mgmt := s.CreateUser(t, "mgmt-"+id, "%", "CREATE USER", "PROCESS", "CONNECTION ADMIN")
	s.Exec(t, "GRANT SELECT ON mysql.* TO '"+mgmt+"'@'%'")
	s.Exec(t, "GRANT "+f.role+" TO '"+mgmt+"'@'%' WITH ADMIN OPTION")
	f.as = connector.Login{Username: mgmt, Credential: pw("mgmt-" + id)}
	return f
}

// spec returns a spec for a new ephemeral user, dropped by the admin user
// when t ends.
func (f *ephemeralFixture) spec(t *testing.T, name string, roles ...string) connector.EphemeralSpec {
	t.Cleanup(func() { f.s.Exec(t, "DROP USER IF EXISTS '"+name+"'@'%'") })
	return connector.EphemeralSpec{Username: name, Password: []byte(`eph'\pw-` + name),
		ValidUntil: time.Now().Add(time.Hour), Roles: roles}
}

func (f *ephemeralFixture) create(t *testing.T, as connector.Login, spec connector.EphemeralSpec) {
	t.Helper()
	if err := New().CreateEphemeral(context.Background(), f.tgt, as, spec); err != nil {
		t.Fatalf("CreateEphemeral(%s): %v", spec.Username, err)
	}
}

func (f *ephemeralFixture) userExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	f.s.QueryRow(t, "SELECT COUNT(*) FROM mysql.user WHERE User = '"+name+"'", &n)
	return n > 0
}

// session logs in as the ephemeral user and keeps the connection open.
func (f *ephemeralFixture) session(t *testing.T, spec connector.EphemeralSpec) *session {
	t.Helper()
	s, err := connect(context.Background(), f.tgt, spec.Username, string(spec.Password))
	if err != nil {
		t.Fatalf("log in as %s: %v", spec.Username, err)
	}
	t.Cleanup(s.close)
	return s
}

func mustSelect42(t *testing.T, s *session, table string) {
	t.Helper()
	var x int
	if err := s.conn.QueryRowContext(context.Background(), "SELECT x FROM "+table).Scan(&x); err != nil || x != 42 {
		t.Fatalf("SELECT from the granted table = %d, %v", x, err)
	}
}

// mustBeDenied runs stmt and requires an access-denied error.
func mustBeDenied(t *testing.T, s *session, stmt string) {
	t.Helper()
	_, err := s.conn.ExecContext(context.Background(), stmt)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || (me.Number != erTableAccess && me.Number != erDBAccessDenied && me.Number != erSpecificAccess) {
		t.Fatalf("%s = %v, want access denied", stmt, err)
	}
}

func TestEphemeralValidation(t *testing.T) {
	tgt := connector.Target{Kind: Kind, Name: "closed", Host: "127.0.0.1", Port: testenv.UnusedPort(t)}
	as := connector.Login{Username: "mgmt", Credential: pw("mgmt")}
	ok := connector.EphemeralSpec{Username: "wjit_1", Password: []byte("secret-pw"), Roles: []string{"App_read"}}
	tests := []struct {
		name   string
		mutate func(*connector.EphemeralSpec)
	}{
		{"empty name", func(s *connector.EphemeralSpec) { s.Username = "" }},
		{"upper case name", func(s *connector.EphemeralSpec) { s.Username = "Wjit_1" }},
		{"quote in name", func(s *connector.EphemeralSpec) { s.Username = "wjit'@'%" }},
		{"64 characters", func(s *connector.EphemeralSpec) { s.Username = "w" + strings.Repeat("x", 63) }},
		{"management account", func(s *connector.EphemeralSpec) { s.Username = "mgmt" }},
		{"backtick in role", func(s *connector.EphemeralSpec) { s.Roles = []string{"app`; DROP USER x; --"} }},
		{"none", func(s *connector.EphemeralSpec) { s.Roles = []string{"NONE"} }},
		{"two roles", func(s *connector.EphemeralSpec) { s.Roles = []string{"a", "b"} }},
		{"empty password", func(s *connector.EphemeralSpec) { s.Password = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := ok
			tt.mutate(&spec)
			if err := New().CreateEphemeral(context.Background(), tgt, as, spec); !errkind.Is(err, errkind.Invalid) {
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
		if err := New().CreateEphemeral(context.Background(), tgt, as, ok); !errkind.Is(err, errkind.Unavailable) {
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
	f.create(t, f.as, spec)

	mustRefuse(t, f.tgt, spec.Username, "wrong-"+string(spec.Password))
	mustLogIn(t, f.tgt, spec.Username, string(spec.Password))

	conn := f.session(t, spec)
	t.Run("can do what the role grants", func(t *testing.T) { mustSelect42(t, conn, f.table) })
	t.Run("and nothing more", func(t *testing.T) {
		mustBeDenied(t, conn, "INSERT INTO "+f.table+" VALUES (1)")
		mustBeDenied(t, conn, "SELECT x FROM "+f.other)
		mustBeDenied(t, conn, "CREATE TABLE "+f.db+".made (x int)")
		mustBeDenied(t, conn, "CREATE USER wt_eph_"+f.id)
	})

	t.Run("create again is idempotent", func(t *testing.T) {
		f.create(t, f.as, spec)
		mustSelect42(t, f.session(t, spec), f.table)
	})
	t.Run("create again updates password and roles", func(t *testing.T) {
		next := spec
		next.Password = []byte("rotated-" + string(spec.Password))
		next.Roles = nil
		f.create(t, f.as, next)
		mustRefuse(t, f.tgt, spec.Username, string(spec.Password))
		mustBeDenied(t, f.session(t, next), "SELECT x FROM "+f.table)
		f.create(t, f.as, spec)
		mustSelect42(t, f.session(t, spec), f.table)
	})

	t.Run("drop terminates the open session", func(t *testing.T) {
		if err := New().DropEphemeral(ctx, f.tgt, f.as, spec.Username); err != nil {
			t.Fatalf("DropEphemeral: %v", err)
		}
		if _, err := conn.conn.ExecContext(ctx, "SELECT 1"); err == nil {
			t.Fatal("the dropped user's open session still answers")
		}
		if f.userExists(t, spec.Username) {
			t.Fatal("the user still exists")
		}
		mustRefuse(t, f.tgt, spec.Username, string(spec.Password))
	})
	t.Run("drop of a missing user", func(t *testing.T) {
		if err := New().DropEphemeral(ctx, f.tgt, f.as, spec.Username); err != nil {
			t.Fatalf("DropEphemeral again: %v", err)
		}
	})
}

// TestEphemeralPrivilegedManager: a management account that may SET
// DEFAULT ROLE for others does so directly (no login as the new user).
func TestEphemeralPrivilegedManager(t *testing.T) {
	f := newEphemeralFixture(t)
	cfg, err := mysql.ParseDSN(testenv.MariaDBDSN())
	if err != nil {
		t.Fatal(err)
	}
	admin := connector.Login{Username: cfg.User, Credential: pw(cfg.Passwd)}
	spec := f.spec(t, "wjit_adm_"+f.id, f.role)
	f.create(t, admin, spec)
	mustSelect42(t, f.session(t, spec), f.table)
	if err := New().DropEphemeral(context.Background(), f.tgt, admin, spec.Username); err != nil {
		t.Fatalf("DropEphemeral: %v", err)
	}
	if f.userExists(t, spec.Username) {
		t.Fatal("the user still exists")
	}
}

func TestEphemeralMissingRole(t *testing.T) {
	f := newEphemeralFixture(t)
	spec := f.spec(t, "wjit_"+f.id, "wt_no_such_role_"+f.id)
	err := New().CreateEphemeral(context.Background(), f.tgt, f.as, spec)
	if !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("CreateEphemeral with a missing role = %v, want NotFound", err)
	}
	if strings.Contains(err.Error(), string(spec.Password)) {
		t.Fatalf("error repeats the password: %v", err)
	}
	if f.userExists(t, spec.Username) {
		t.Fatal("a failed CreateEphemeral left the user behind")
	}
}

func TestEphemeralList(t *testing.T) {
	f := newEphemeralFixture(t)
	ctx := context.Background()
	p := "wjl" + f.id
	under, other := p+"_a", p+"xa" // '_' in a LIKE pattern would match the x
	for _, name := range []string{under, other} {
		f.create(t, f.as, f.spec(t, name))
	}
	f.s.Exec(t, "CREATE ROLE "+p+"_role") // roles are not listed
	t.Cleanup(func() { f.s.Exec(t, "DROP ROLE IF EXISTS "+p+"_role") })
	f.s.CreateNamedUser(t, p+"_host", "pw", "127.0.0.1") // nor accounts on another host

	tests := []struct {
		name   string
		prefix string
		want   []string
	}{
		{"plain prefix", p, []string{under, other}},
		{"underscore is literal", p + "_", []string{under}},
		{"percent is literal", p + "%", nil},
		{"percent inside", p[:3] + "%" + p[4:], nil},
		{"escape character", p + "!", nil},
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
