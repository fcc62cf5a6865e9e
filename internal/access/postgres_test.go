package access

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/connector/postgres"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/testenv"
	"github.com/warderhq/warder/internal/vault"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgresSCRAM()
	os.Exit(code)
}

// TestPostgresEphemeralUser runs a grant with an ephemeral user against a
// real PostgreSQL server, with the real clock and a short TTL: the user
// exists during the grant and can do what its role grants and nothing
// more; the grant is refused once its TTL passed; the user is dropped
// afterwards, and so is an orphan left by a "crash".
func TestPostgresEphemeralUser(t *testing.T) {
	ctx := context.Background()
	c := testenv.PostgresSCRAM(t)
	id := fmt.Sprintf("%010x", rand.Uint64()>>24)
	table, other, dbRole := "wt_t_"+id, "wt_o_"+id, "wt_read_"+id
	mgmtPW := "mgmt-" + id
	mgmt := c.CreateRole(t, mgmtPW, "CREATEROLE")
	c.Exec(t, "CREATE TABLE "+table+" (x int)")
	c.Exec(t, "INSERT INTO "+table+" VALUES (42)")
	c.Exec(t, "CREATE TABLE "+other+" (x int)")
	c.Exec(t, "CREATE ROLE "+dbRole+" NOLOGIN")
	c.Exec(t, "GRANT SELECT ON "+table+" TO "+dbRole)
	t.Cleanup(func() {
		c.Exec(t, "DROP TABLE IF EXISTS "+table+", "+other)
		c.Exec(t, "DROP ROLE IF EXISTS "+dbRole)
	})

	db := testenv.SQLite(t)
	log, err := audit.New(ctx, audit.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	ids := &memIdentity{parents: map[identity.Member][]string{}}
	az, err := authz.New(ctx, authz.Config{DB: db, Audit: log, Entities: resolver{ids}})
	if err != nil {
		t.Fatal(err)
	}
	vlt := &memVault{
		targets: map[string]vault.Target{"pg": {Name: "pg", Kind: postgres.Kind, Host: c.Host, Port: c.Port,
			Options: map[string]string{postgres.OptSSLMode: "disable"}, ManagementAccount: mgmt}},
		creds: map[string]connector.Credential{"pg/" + mgmt: {Kind: connector.Password, Secret: []byte(mgmtPW)}},
	}
	conns := connector.Registry{postgres.Kind: postgres.New()}
	a, err := New(ctx, Config{DB: db, Audit: log, Authz: az, Identity: ids, Vault: vlt, Connectors: conns, Barrier: newMemCipher()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateRole(ctx, admin, RoleSpec{Name: "pg-read",
		Template:  `permit(principal == ?principal, action == Action::"connect", resource == Target::"pg");`,
		Ephemeral: &EphemeralRole{Target: "pg", Roles: []string{dbRole}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetEligibility(ctx, admin, Eligibility{Role: "pg-read", Subject: Subject{SubjectUser, "alice"}, MaxTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}

	// An orphan, as if Warder crashed after creating it.
	orphan := EphemeralPrefix + id[:10] + "ff"
	t.Cleanup(func() { c.Exec(t, "DROP ROLE IF EXISTS "+orphan) })
	as := connector.Login{Username: mgmt, Credential: vlt.creds["pg/"+mgmt]}
	if err := conns[postgres.Kind].(connector.Ephemeral).CreateEphemeral(ctx, vlt.targets["pg"].Connector(), as,
		connector.EphemeralSpec{Username: orphan, Password: []byte("orphan-pw-" + id), ValidUntil: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	const ttl = 3 * time.Second
	r, err := a.CreateRequest(ctx, origin(alice), alice, RequestSpec{Role: "pg-read", TTL: ttl, Reason: "read the table"})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := a.Grant(ctx, r.GrantID)
	t.Cleanup(func() { c.Exec(t, "DROP ROLE IF EXISTS "+g.Ephemeral.Username) })
	cred, err := a.RevealEphemeral(ctx, origin(alice), alice, g.ID)
	if err != nil {
		t.Fatalf("RevealEphemeral: %v (grant %+v)", err, g.Ephemeral)
	}
	conn, err := pgx.Connect(ctx, pgURL(cred))
	if err != nil {
		t.Fatalf("log in as the ephemeral user: %v", err)
	}
	var x int
	if err := conn.QueryRow(ctx, "SELECT x FROM "+table).Scan(&x); err != nil || x != 42 {
		t.Errorf("SELECT from the granted table: %d, %v", x, err)
	}
	if _, err := conn.Exec(ctx, "SELECT x FROM "+other); err == nil {
		t.Error("SELECT from a table the role does not grant succeeded")
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+table+" VALUES (1)"); err == nil {
		t.Error("INSERT into the granted table succeeded")
	}
	conn.Close(ctx)
	connect := authz.Request{Principal: authz.UID{Type: authz.TypeUser, ID: "alice"}, Action: authz.ActionConnect, Resource: authz.UID{Type: authz.TypeTarget, ID: "pg"}}
	if d, err := az.Check(ctx, connect); err != nil || !d.Allow {
		t.Errorf("connect during the grant: %+v, %v", d, err)
	}

	time.Sleep(time.Until(g.ExpiresAt))
	if d, err := az.Check(ctx, connect); err != nil || d.Allow {
		t.Errorf("connect after the TTL: %+v, %v; want deny", d, err)
	}
	if err := a.Sweep(ctx); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	users, err := conns[postgres.Kind].(connector.Ephemeral).ListEphemeral(ctx, vlt.targets["pg"].Connector(), as, EphemeralPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u == g.Ephemeral.Username || u == orphan {
			t.Errorf("%s still exists after Sweep", u)
		}
	}
	if _, err := pgx.Connect(ctx, pgURL(cred)); err == nil {
		t.Error("the ephemeral user can still log in")
	}
}

func pgURL(c EphemeralCredential) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(c.Username, c.Password), Host: c.Host + ":" + strconv.Itoa(c.Port),
		Path: "/postgres", RawQuery: "sslmode=disable&connect_timeout=10"}
	return u.String()
}
