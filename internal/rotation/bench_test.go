package rotation

import (
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/connector/postgres"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
	"github.com/warderhq/warder/internal/vault"
)

// BenchmarkRotateTarget1000 measures RotateTarget on one postgres target
// (the password-checked SCRAM cluster) holding many roles, through the
// whole engine: claim, stage the pending version durably, ALTER ROLE
// through the management role, log in with the new password, promote,
// release, with MaxConcurrentRotations 8. It reports rotations/s; the limit
// is the connector alone (internal/connector/postgres BenchmarkRotatePostgres,
// same two logins and one ALTER ROLE per rotation). docs/benchmarks.md
// quotes both.
//
// The target holds 1,000 roles when WARDER_BENCH_ROTATE_1000=1, else 50, so
// that a plain `go test -bench .` stays quick:
//
//	WARDER_BENCH_ROTATE_1000=1 go test ./internal/rotation/ -run '^$' -bench RotateTarget1000 -benchtime 3x
func BenchmarkRotateTarget1000(b *testing.B) {
	roles := 50
	if os.Getenv("WARDER_BENCH_ROTATE_1000") == "1" {
		roles = 1000
	}
	for _, be := range testenv.Backends() {
		b.Run(fmt.Sprintf("%s/roles=%d", be.Name, roles), func(b *testing.B) { benchRotateTarget(b, be.Open(b), roles) })
	}
}

func benchRotateTarget(b *testing.B, db *store.DB, roles int) {
	c := testenv.PostgresSCRAM(b)
	e := newRealEnv(b, db)
	ctx := e.ctx
	mgmtPW := randomPassword()
	mgmt := c.CreateRole(b, mgmtPW, "CREATEROLE")
	prefix := "wb_" + strings.ToLower(rand.Text()[:8]) + "_"
	c.Exec(b, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
		EXECUTE format('CREATE ROLE %%I LOGIN PASSWORD %%L', '%s' || i, 'initial');
	END LOOP; END $$`, roles, prefix))
	b.Cleanup(func() {
		c.Exec(b, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
			EXECUTE format('DROP ROLE IF EXISTS %%I', '%s' || i);
		END LOOP; END $$`, roles, prefix))
	})

	const target = "bench-pg"
	if _, err := e.vault.AddTarget(ctx, origin, vault.TargetSpec{Name: target, Kind: "postgres", Host: c.Host, Port: c.Port,
		Options: map[string]string{postgres.OptSSLMode: "disable"}, ManagementAccount: mgmt, MaxConcurrentRotations: 8}); err != nil {
		b.Fatal(err)
	}
	mc := pwCred(mgmtPW)
	if _, err := e.vault.AddAccount(ctx, origin, vault.AccountSpec{Target: target, Username: mgmt, Credential: &mc}); err != nil {
		b.Fatal(err)
	}
	for i := range roles {
		cred := connector.Credential{Kind: connector.Password, Secret: []byte("initial")}
		if _, err := e.vault.AddAccount(ctx, origin, vault.AccountSpec{Target: target, Username: fmt.Sprintf("%s%d", prefix, i+1), Credential: &cred}); err != nil {
			b.Fatal(err)
		}
	}
	eng := e.newEngine(b, 8)
	o := audit.Origin{Actor: "bench"}
	n := 0
	for b.Loop() {
		results, err := eng.RotateTarget(ctx, o, target)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range results {
			if r.Outcome != Rotated {
				b.Fatalf("%s: %s", r.Account, r.Outcome)
			}
		}
		n += len(results)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rotations/s")
}
