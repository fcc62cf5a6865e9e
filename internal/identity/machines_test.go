package identity

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

var ciOrigin = audit.Origin{Source: "10.1.2.3"}

func TestMachines(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, func(c *Config) { c.SourceBurst = 100 })
		ctx, d := e.ctx, e.dir
		for _, spec := range []MachineSpec{
			{Name: "Bad"},
			{Name: "x", TokenTTL: time.Second},
			{Name: "x", TokenTTL: 25 * time.Hour},
			{Name: "x", TokenTTL: time.Hour, TokenMaxTTL: time.Minute},
		} {
			if _, err := d.CreateMachine(ctx, admin, spec); !errkind.Is(err, errkind.Invalid) {
				t.Errorf("CreateMachine(%+v) = %v, want Invalid", spec, err)
			}
		}
		m, err := d.CreateMachine(ctx, admin, MachineSpec{Name: "ci", TokenTTL: 10 * time.Minute, TokenMaxTTL: 25 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if !roleIDRE.MatchString(m.RoleID) || m.TokenTTL != 10*time.Minute {
			t.Errorf("CreateMachine = %+v", m)
		}
		if _, err := d.CreateMachine(ctx, admin, MachineSpec{Name: "ci"}); !errkind.Is(err, errkind.Conflict) {
			t.Errorf("duplicate machine = %v", err)
		}
		def, err := d.CreateMachine(ctx, admin, MachineSpec{Name: "batch"})
		if err != nil || def.TokenTTL != 20*time.Minute || def.TokenMaxTTL != 24*time.Hour || def.RoleID == m.RoleID {
			t.Errorf("defaults = %+v, %v", def, err)
		}
		if got, err := d.Machine(ctx, "ci"); err != nil || got != m {
			t.Errorf("Machine = %+v, %v; want %+v", got, err, m)
		}
		if ms, err := d.Machines(ctx); err != nil || len(ms) != 2 || ms[0].Name != "batch" {
			t.Errorf("Machines = %+v, %v", ms, err)
		}
		if _, _, err := d.IssueSecretID(ctx, admin, "nobody", SecretIDSpec{}); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("IssueSecretID(nobody) = %v", err)
		}
		if _, _, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{Uses: -1}); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("IssueSecretID(uses -1) = %v", err)
		}

		sid, info, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{Uses: 2, TTL: time.Hour, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(sid, "wsi1."+info.ID+".") || info.Uses != 2 || info.ExpiresAt != e.clock.Now().Add(time.Hour) || len(info.CIDRs) != 1 {
			t.Errorf("IssueSecretID = %q, %+v", sid, info)
		}
		src := netip.MustParseAddr("10.1.2.3")
		login := func(role, secret string, from netip.Addr) (string, Token, error) {
			return d.LoginMachine(ctx, ciOrigin, role, secret, from)
		}

		flip := []byte(sid)
		flip[len(flip)-1] ^= 'A' ^ 'B'
		for _, tt := range []struct {
			name, role, secret string
			from               netip.Addr
		}{
			{"wrong role", def.RoleID, sid, src},
			{"garbage role", "role", sid, src},
			{"wrong secret", m.RoleID, string(flip), src},
			{"malformed secret", m.RoleID, "secret", src},
			{"source outside CIDR", m.RoleID, sid, netip.MustParseAddr("10.2.0.1")},
			{"unknown source", m.RoleID, sid, netip.Addr{}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if _, _, err := login(tt.role, tt.secret, tt.from); err != ErrMachineCredentials {
					t.Errorf("LoginMachine = %v, want ErrMachineCredentials", err)
				}
			})
		}

		presented, tok, err := login(m.RoleID, sid, src)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Principal != (Principal{KindMachine, "ci"}) || tok.ExpiresAt != e.clock.Now().Add(10*time.Minute) ||
			tok.MaxExpiresAt != e.clock.Now().Add(25*time.Minute) || tok.Actor() != "machine:ci" {
			t.Errorf("machine token = %+v", tok)
		}
		if _, err := d.Authenticate(ctx, presented); err != nil {
			t.Errorf("Authenticate(machine token) = %v", err)
		}
		if _, _, err := login(m.RoleID, sid, netip.MustParseAddr("::ffff:10.1.9.9")); err != nil {
			t.Errorf("second use (IPv4-mapped source) = %v", err)
		}
		if _, _, err := login(m.RoleID, sid, src); err != ErrMachineCredentials {
			t.Errorf("third use of a 2-use secret id = %v", err)
		}

		// Token TTL and capped renewal.
		e.clock.Advance(9 * time.Minute)
		if r, err := d.Renew(ctx, admin, tok.ID); err != nil || r.ExpiresAt != e.clock.Now().Add(10*time.Minute) {
			t.Errorf("Renew = %+v, %v", r, err)
		}
		e.clock.Advance(9 * time.Minute) // 18m after issue; cap at 25m
		if r, err := d.Renew(ctx, admin, tok.ID); err != nil || r.ExpiresAt != tok.MaxExpiresAt {
			t.Errorf("Renew near cap = %+v, %v; want %v", r, err, tok.MaxExpiresAt)
		}
		e.clock.Advance(7 * time.Minute)
		if _, err := d.Authenticate(ctx, presented); err != ErrBadToken {
			t.Errorf("machine token past its max TTL = %v", err)
		}

		// Unlimited uses, default TTL (24h), any source.
		unlimited, info, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{})
		if err != nil || info.Uses != 0 || info.ExpiresAt != e.clock.Now().Add(24*time.Hour) {
			t.Fatalf("IssueSecretID(defaults) = %+v, %v", info, err)
		}
		for range 3 {
			if _, _, err := login(m.RoleID, unlimited, netip.MustParseAddr("192.0.2.55")); err != nil {
				t.Fatalf("unlimited secret id: %v", err)
			}
		}
		e.clock.Advance(24 * time.Hour)
		if _, _, err := login(m.RoleID, unlimited, src); err != ErrMachineCredentials {
			t.Errorf("expired secret id = %v", err)
		}
		if n := e.countEvents(t, "auth.login", audit.OutcomeDeny, ""); n != 8 {
			t.Errorf("%d denied machine logins audited, want 8", n)
		}

		// Deleting the machine kills its tokens and secret ids.
		live, _, err := d.IssueSecretID(ctx, admin, "ci", SecretIDSpec{})
		if err != nil {
			t.Fatal(err)
		}
		ptok, _, err := login(m.RoleID, live, src)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteMachine(ctx, admin, "ci"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Authenticate(ctx, ptok); err != ErrBadToken {
			t.Errorf("token of deleted machine = %v", err)
		}
		if _, _, err := login(m.RoleID, live, src); err != ErrMachineCredentials {
			t.Errorf("secret id of deleted machine = %v", err)
		}
		if evs := e.lifecycle(); len(evs) != 1 || evs[0] != (LifecycleEvent{EventMachineDeleted, Principal{KindMachine, "ci"}, e.clock.Now()}) {
			t.Errorf("lifecycle = %+v", evs)
		}
		if err := d.DeleteMachine(ctx, admin, "ci"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("second DeleteMachine = %v", err)
		}
	})
}

// TestSingleUseSecretIDConcurrent logs in with a one-use secret id from two
// processes (two handles on one PostgreSQL database) at once: exactly one
// gets a token.
func TestSingleUseSecretIDConcurrent(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(ctx, store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	e1 := newEnv(t, open(), func(c *Config) { c.SourceBurst = 1000 })
	db2 := open()
	b2, err := barrier.New(ctx, barrier.Config{DB: db2})
	if err != nil {
		t.Fatal(err)
	}
	e2 := newEnvWith(t, db2, b2, func(c *Config) { c.SourceBurst = 1000 })
	m, err := e1.dir.CreateMachine(ctx, admin, MachineSpec{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("10.0.0.1")
	for round := range 10 {
		sid, _, err := e1.dir.IssueSecretID(ctx, admin, "ci", SecretIDSpec{Uses: 1})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i, d := range []*Directory{e1.dir, e2.dir} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, errs[i] = d.LoginMachine(ctx, ciOrigin, m.RoleID, sid, src)
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch err {
			case nil:
				ok++
			case ErrMachineCredentials:
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d logins succeeded with a one-use secret id (%v)", round, ok, errs)
		}
	}
	var tokens int
	if err := e1.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_tokens WHERE principal_name = 'ci'`).Scan(&tokens); err != nil || tokens != 10 {
		t.Errorf("%d tokens issued, %v; want 10", tokens, err)
	}
}

func TestMachineJSON(t *testing.T) {
	b, err := json.Marshal(Machine{Name: "ci", RoleID: "r", TokenTTL: 20 * time.Minute, TokenMaxTTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"token_ttl":"20m0s"`) || !strings.Contains(string(b), `"token_max_ttl":"24h0m0s"`) || !strings.Contains(string(b), `"name":"ci"`) {
		t.Errorf("Machine JSON = %s", b)
	}
}
