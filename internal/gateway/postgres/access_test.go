package postgres

// Tests of authentication by client certificate and scoped token, of
// per-connection rules and upstream TLS, and of the watch that ends a
// session when its access ends.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/gateway"
	"github.com/warderhq/warder/internal/identity"
)

// tweaked is a Resolver that changes what static resolves.
type tweaked struct {
	*static
	tweak func(*Upstream)
}

func (r tweaked) Resolve(ctx context.Context, p identity.Principal, target, account string, tok identity.Token) (Upstream, error) {
	up, err := r.static.Resolve(ctx, p, target, account, tok)
	if err == nil {
		r.tweak(&up)
	}
	return up, err
}

// withUpstream is an option that tweaks every resolved Upstream.
func withUpstream(tweak func(*Upstream)) option {
	return func(c *Config, s *static) { c.Upstream = tweaked{s, tweak} }
}

// wantFatal checks that err is a PostgreSQL error with code whose message
// contains msg.
func wantFatal(t *testing.T, what string, err error, code, msg string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code || !strings.Contains(pe.Message, msg) {
		t.Fatalf("%s: error = %v; want %s %q", what, err, code, msg)
	}
}

// clientCA is a test certificate authority for client certificates.
type clientCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newClientCA(t *testing.T) *clientCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &clientCA{cert: cert, key: key}
}

func (ca *clientCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue returns a client certificate for cn.
func (ca *clientCA) issue(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// certUsers is a CertAuthenticator: the leaf's common name is the user;
// a name it does not list has a dead token.
type certUsers map[string]identity.Token

func (m certUsers) AuthenticateCert(_ context.Context, chain []*x509.Certificate) (identity.Token, error) {
	if tok, ok := m[chain[0].Subject.CommonName]; ok {
		return tok, nil
	}
	return identity.Token{}, identity.ErrBadToken
}

func TestClientCertificate(t *testing.T) {
	ca := newClientCA(t)
	f := newFixture(t, func(c *Config, _ *static) {
		c.TLS.ClientAuth = tls.VerifyClientCertIfGiven
		c.TLS.ClientCAs = ca.pool()
		c.CertAuth = certUsers{"alice": {ID: "cert-token", Principal: identity.Principal{Kind: identity.KindUser, Name: "alice"}}}
	})
	ctx := context.Background()
	connectWith := func(cert *tls.Certificate, password string) (*pgx.Conn, error) {
		cfg := f.config(t, f.role+"@pg", password)
		if cert != nil {
			cfg.TLSConfig.Certificates = []tls.Certificate{*cert}
		}
		return pgx.ConnectConfig(ctx, cfg)
	}

	alice := ca.issue(t, "alice")
	conn, err := connectWith(&alice, "") // no password: the certificate is enough
	if err != nil {
		t.Fatalf("connect with a client certificate: %v", err)
	}
	var user string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&user); err != nil || user != f.role {
		t.Errorf("current_user = %q, %v", user, err)
	}
	conn.Close(ctx)
	f.pol.mu.Lock()
	last := f.pol.reqs[len(f.pol.reqs)-1]
	f.pol.mu.Unlock()
	if last.Details["auth"] != "certificate" || last.Details["token"] != "cert-token" || last.Principal.ID != "alice" {
		t.Errorf("authorized request = %+v; want alice by certificate with token cert-token", last)
	}

	// A certificate whose token is dead is refused, even with a password.
	gone := ca.issue(t, "mallory")
	_, err = connectWith(&gone, aliceToken)
	wantFatal(t, "dead token's certificate", err, "28000", "client certificate is no longer valid")
	if !hasEvent(f.aud, "db.auth", audit.OutcomeDeny, "anonymous") {
		t.Error("the refused certificate was not audited")
	}

	// A certificate of another CA fails the TLS handshake.
	foreign := newClientCA(t).issue(t, "alice")
	if c, err := connectWith(&foreign, aliceToken); err == nil {
		c.Close(ctx)
		t.Error("connected with a certificate of another CA")
	}

	// Without a certificate, the token as password still works.
	conn, err = connectWith(nil, aliceToken)
	if err != nil {
		t.Fatalf("connect with a token: %v", err)
	}
	conn.Close(ctx)
}

func hasEvent(a *memAudit, action, outcome, actor string) bool {
	for _, ev := range a.Events() {
		if ev.Action == action && ev.Outcome == outcome && ev.Actor == actor {
			return true
		}
	}
	return false
}

func TestScopedToken(t *testing.T) {
	const (
		forRole   = "wt1.scoped-for-role"
		forTarget = "wt1.scoped-for-target"
	)
	var role string
	f := newFixture(t, func(c *Config, s *static) {
		role = s.user
		alice := identity.Principal{Kind: identity.KindUser, Name: "alice"}
		c.Auth = tokens{
			forRole:   {ID: "r", Principal: alice, Scope: identity.DBScope("pg", s.user)},
			forTarget: {ID: "t", Principal: alice, Scope: identity.DBScope("pg", "")},
		}
	})
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, f.config(t, role+"@pg", forRole))
	if err != nil {
		t.Fatalf("scoped token for its account: %v", err)
	}
	conn.Close(ctx)
	conn, err = pgx.ConnectConfig(ctx, f.config(t, "pg", forTarget))
	if err != nil {
		t.Fatalf("scoped token for its target: %v", err)
	}
	conn.Close(ctx)
	for _, tc := range []struct{ name, user, token string }{
		{"other account", "postgres@pg", forRole},
		{"other target", role + "@other", forRole},
		{"target token naming an account", role + "@pg", forTarget},
		{"account token naming the target", "pg", forRole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pgx.ConnectConfig(ctx, f.config(t, tc.user, tc.token))
			wantFatal(t, tc.name, err, "28000", "warder: this token is not valid for")
		})
	}
	if !hasEvent(f.aud, "db.auth", audit.OutcomeDeny, "user:alice") {
		t.Error("refused scoped tokens were not audited")
	}
}

func TestUpstreamRules(t *testing.T) {
	// One fixture per (sub)test: the leak check of one would see the
	// other's server.
	t.Run("block", func(t *testing.T) {
		f := newFixture(t, withUpstream(func(up *Upstream) {
			up.Rules = []Rule{{Pattern: regexp.MustCompile(`(?i)\bdrop\s+table\b`), Action: ActionBlock, Message: "ask first"}}
		}))
		conn := f.connect(t)
		ctx := context.Background()
		if _, err := conn.Exec(ctx, "create temp table keep(a int)"); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Exec(ctx, "drop table keep")
		wantFatal(t, "blocked statement", err, "42501", "warder: statement blocked by rule")
		if _, err := conn.Exec(ctx, "select count(*) from keep"); err != nil {
			t.Fatalf("after the block: %v", err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		f := newFixture(t, withUpstream(func(up *Upstream) { up.Rules = []Rule{{Action: ActionBlock}} }))
		_, err := pgx.ConnectConfig(context.Background(), f.config(t, f.role+"@pg", aliceToken))
		wantFatal(t, "invalid rule", err, "XX000", "warder: internal error")
		if n := f.up.released.Load(); n != 1 {
			t.Errorf("credential released %d times after an invalid rule, want 1", n)
		}
	})
}

func TestUpstreamTLS(t *testing.T) {
	// The test cluster runs without TLS: sslmode=prefer falls back to
	// plaintext, require does not.
	t.Run("prefer", func(t *testing.T) {
		f := newFixture(t, withUpstream(func(up *Upstream) {
			up.TLS, up.PlaintextFallback = &tls.Config{InsecureSkipVerify: true}, true
		}))
		f.connect(t).Close(context.Background())
	})
	t.Run("require", func(t *testing.T) {
		f := newFixture(t, withUpstream(func(up *Upstream) { up.TLS = &tls.Config{InsecureSkipVerify: true} }))
		_, err := pgx.ConnectConfig(context.Background(), f.config(t, f.role+"@pg", aliceToken))
		wantFatal(t, "TLS required upstream", err, "08006", "warder: cannot log in to")
	})
}

// checker is a gateway.Checker whose answer the test sets.
type checker struct {
	deny   atomic.Bool
	mu     sync.Mutex
	checks []authz.Request
}

func (c *checker) Check(_ context.Context, req authz.Request) (authz.Decision, error) {
	c.mu.Lock()
	c.checks = append(c.checks, req)
	c.mu.Unlock()
	if c.deny.Load() {
		return authz.Decision{Decision: "deny"}, nil
	}
	return authz.Decision{Allow: true, Decision: "allow"}, nil
}

// grantPolicy allows like policy, through a grant ending at notAfter.
type grantPolicy struct {
	*policy
	notAfter time.Time
}

func (p grantPolicy) Authorize(ctx context.Context, o audit.Origin, req authz.Request) (authz.Decision, error) {
	d, err := p.policy.Authorize(ctx, o, req)
	if d.Allow {
		d.NotAfter = p.notAfter
	}
	return d, err
}

func TestWatchWithdrawn(t *testing.T) {
	ch := &checker{}
	f := newFixture(t, func(c *Config, _ *static) { c.Checker, c.Recheck = ch, 100*time.Millisecond })
	conn := f.connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "select pg_sleep(30)"); errc <- err }()
	time.Sleep(300 * time.Millisecond) // a few re-checks that allow
	ch.deny.Store(true)
	select {
	case err := <-errc:
		wantFatal(t, "withdrawn access", err, "57P01", gateway.MsgWithdrawn)
	case <-time.After(10 * time.Second):
		t.Fatal("the session outlived its access")
	}
	sess := f.rec.last(t)
	waitFor(t, "session close", func() bool { return sess.Status() == StatusKilled })
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.checks) < 2 || ch.checks[0].Action != authz.ActionConnect || ch.checks[0].Principal.ID != "alice" ||
		ch.checks[0].Resource.ID != "pg/"+f.role || ch.checks[0].Details != nil {
		t.Errorf("re-checks = %+v; want the connect request, without details", ch.checks)
	}
}

func TestWatchGrantEnds(t *testing.T) {
	// The grant ends before the lease: the session ends with the grant.
	f := newFixture(t, func(c *Config, s *static) {
		c.Checker, c.Recheck = &checker{}, time.Hour
		c.Authz = grantPolicy{policy: c.Authz.(*policy), notAfter: time.Now().Add(1500 * time.Millisecond)}
		s.notAfter = time.Now().Add(time.Hour)
	})
	conn := f.connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "select pg_sleep(20)")
	wantFatal(t, "grant end", err, "57P01", gateway.MsgExpired)
	sess := f.rec.last(t)
	waitFor(t, "session close", func() bool { return sess.Status() != "" })
	if msg := sess.KillMessage(); msg == "" {
		t.Error("the recording's deadline was not ended: it would not be stored as expired")
	}
}

// refusing is a Resolver that refuses with err.
type refusing struct{ err error }

func (r refusing) Resolve(context.Context, identity.Principal, string, string, identity.Token) (Upstream, error) {
	return Upstream{}, r.err
}

func TestResolverPublicError(t *testing.T) {
	f := newFixture(t, func(c *Config, _ *static) {
		c.Upstream = refusing{&PublicError{Message: "name the account: connect as ACCOUNT@pg", Err: errors.New("internal: no grant row 42")}}
	})
	_, err := pgx.ConnectConfig(context.Background(), f.config(t, "pg", aliceToken))
	wantFatal(t, "public error", err, "08006", "warder: name the account: connect as ACCOUNT@pg")
	if strings.Contains(err.Error(), "row 42") {
		t.Errorf("the internal detail reached the client: %v", err)
	}
}

// TestWatchTokenRevoked: a session ends when the token that authenticated
// it is revoked (logout), though the policy still allows.
func TestWatchTokenRevoked(t *testing.T) {
	var revoked atomic.Bool
	var asked atomic.Value // the token id the re-checks ask about
	f := newFixture(t, func(c *Config, _ *static) {
		c.Checker, c.Recheck = &checker{}, 100*time.Millisecond
		c.TokenLive = func(_ context.Context, id string) (identity.Token, error) {
			asked.Store(id)
			if revoked.Load() {
				return identity.Token{}, fmt.Errorf("test: %w", identity.ErrBadToken)
			}
			return identity.Token{ID: id}, nil
		}
	})
	conn := f.connect(t)
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "select pg_sleep(30)"); errc <- err }()
	time.Sleep(300 * time.Millisecond) // a few re-checks that allow
	revoked.Store(true)
	select {
	case err := <-errc:
		wantFatal(t, "revoked token", err, "57P01", gateway.MsgWithdrawn)
	case <-time.After(10 * time.Second):
		t.Fatal("the session outlived its token")
	}
	if id, _ := asked.Load().(string); id == "" {
		t.Error("the re-checks did not name the session's token")
	}
}

// TestStartupParams: presentation settings pass to the server; settings
// that would change the session unseen by rules and recording do not.
func TestStartupParams(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cfg := f.config(t, f.role+"@pg", aliceToken)
	cfg.RuntimeParams = map[string]string{"TimeZone": "Asia/Tokyo", "search_path": "evil", "default_transaction_read_only": "on"}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for setting, want := range map[string]string{"timezone": "Asia/Tokyo", "default_transaction_read_only": "off"} {
		var got string
		if err := conn.QueryRow(ctx, "select current_setting($1)", setting).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", setting, got, err, want)
		}
	}
	var sp string
	if err := conn.QueryRow(ctx, "show search_path").Scan(&sp); err != nil || strings.Contains(sp, "evil") {
		t.Errorf("search_path = %q, %v: the startup parameter was passed", sp, err)
	}
}
