package postgres

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgresSCRAM()
	os.Exit(code)
}

// testTLS returns a server config with a fresh self-signed certificate for
// 127.0.0.1 and a client config trusting it.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "warder test gateway"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// tokens is an Authenticator with a fixed set of tokens.
type tokens map[string]identity.Token

func (m tokens) Authenticate(_ context.Context, presented string) (identity.Token, error) {
	if tok, ok := m[presented]; ok {
		return tok, nil
	}
	return identity.Token{}, identity.ErrBadToken
}

// policy allows the listed principals and remembers the requests.
type policy struct {
	mu      sync.Mutex
	allow   map[string]bool // principal name → allowed
	reqs    []authz.Request
	origins []audit.Origin
}

func (p *policy) Authorize(_ context.Context, o audit.Origin, req authz.Request) (authz.Decision, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, req)
	p.origins = append(p.origins, o)
	if p.allow[req.Principal.ID] {
		return authz.Decision{Allow: true, Decision: "allow", Policies: []string{"test"}}, nil
	}
	return authz.Decision{Decision: "deny", Policies: []string{}}, nil
}

// static resolves every connection to one role of the SCRAM cluster.
type static struct {
	host     string
	port     int
	user     string
	password string
	notAfter time.Time
	released atomic.Int32
}

func (s *static) Resolve(_ context.Context, _ identity.Principal, target, account string, _ identity.Token) (Upstream, error) {
	if target != "pg" {
		return Upstream{}, fmt.Errorf("no target %q", target)
	}
	return Upstream{Host: s.host, Port: s.port, User: s.user, Password: []byte(s.password),
		NotAfter: s.notAfter, LeaseID: "lease-1", Release: func() { s.released.Add(1) }}, nil
}

// memRecorder is an in-memory Recorder.
type memRecorder struct {
	mu       sync.Mutex
	sessions []*memSession
	fail     bool // Start fails
}

func (m *memRecorder) Start(_ context.Context, o audit.Origin, meta Meta) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return nil, errors.New("recording store down")
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &memSession{id: fmt.Sprintf("s%d", len(m.sessions)+1), meta: meta, origin: o, ctx: ctx, cancel: cancel}
	m.sessions = append(m.sessions, s)
	return s, nil
}

func (m *memRecorder) last(t *testing.T) *memSession {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sessions) == 0 {
		t.Fatal("no session recorded")
	}
	return m.sessions[len(m.sessions)-1]
}

type memSession struct {
	id      string
	meta    Meta
	origin  audit.Origin
	ctx     context.Context
	cancel  context.CancelCauseFunc
	in, out atomic.Int64

	mu      sync.Mutex
	records []map[string]any
	raw     []string
	status  string
	killMsg string
	timer   *time.Timer
	closed  chan struct{}
}

func (s *memSession) ID() string { return s.id }
func (s *memSession) Record(data []byte) error {
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("invalid record %q: %v", data, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != "" {
		return errors.New("closed")
	}
	s.records = append(s.records, v)
	s.raw = append(s.raw, string(data))
	return nil
}
func (s *memSession) AddBytes(in, out int64)   { s.in.Add(in); s.out.Add(out) }
func (s *memSession) Context() context.Context { return s.ctx }
func (s *memSession) KillMessage() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killMsg
}
func (s *memSession) kill(msg string) {
	s.mu.Lock()
	s.killMsg = msg
	s.mu.Unlock()
	s.cancel(errors.New(msg))
}
func (s *memSession) SetDeadline(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = time.AfterFunc(time.Until(t), func() { s.kill("the grant or lease expired") })
}
func (s *memSession) Close(_ context.Context, status string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.status = status
	s.cancel(errors.New("closed"))
	if s.closed != nil {
		close(s.closed)
	}
	return nil
}

// Records returns a copy of the records so far.
func (s *memSession) Records() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.records...)
}

func (s *memSession) Status() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// memAudit is an in-memory AuditLog.
type memAudit struct {
	mu     sync.Mutex
	events []audit.Event
}

func (a *memAudit) Append(_ context.Context, ev audit.Event) (audit.Event, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, ev)
	return ev, nil
}

func (a *memAudit) Events() []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]audit.Event(nil), a.events...)
}

// fixture is a gateway in front of a role of the SCRAM cluster.
type fixture struct {
	cluster   *testenv.SCRAMCluster
	srv       *Server
	addr      *net.TCPAddr
	clientTLS *tls.Config
	rec       *memRecorder
	aud       *memAudit
	pol       *policy
	up        *static
	password  string // the role's: must never reach a client
	role      string
}

const (
	aliceToken = "wt1.alice-test-token"
	bobToken   = "wt1.bob-test-token"
)

type option func(*Config, *static)

// newFixture starts a gateway (with leak checks at cleanup).
func newFixture(t *testing.T, opts ...option) *fixture {
	t.Helper()
	c := testenv.PostgresSCRAM(t)
	checkLeaks(t)
	password := "Up-" + strings.Repeat("s3cr3t", 4) + fmt.Sprint(time.Now().UnixNano())
	role := c.CreateRole(t, password, "")
	t.Cleanup(func() { // before the role is dropped: its backends must be gone
		waitFor(t, "the role's backends to exit", func() bool {
			var n int
			c.QueryRow(context.Background(), "select count(*) from pg_stat_activity where usename = $1", role).Scan(&n)
			return n == 0
		})
	})
	f := &fixture{cluster: c, rec: &memRecorder{}, aud: &memAudit{}, password: password, role: role,
		pol: &policy{allow: map[string]bool{"alice": true}},
		up:  &static{host: c.Host, port: c.Port, user: role, password: password}}
	srvTLS, cliTLS := testTLS(t)
	f.clientTLS = cliTLS
	cfg := Config{
		TLS: srvTLS,
		Auth: tokens{
			aliceToken: {ID: "a", Principal: identity.Principal{Kind: identity.KindUser, Name: "alice"}},
			bobToken:   {ID: "b", Principal: identity.Principal{Kind: identity.KindUser, Name: "bob"}},
		},
		Authz: f.pol, Upstream: f.up, Recorder: f.rec, Audit: f.aud,
		HandshakeTimeout: 20 * time.Second,
	}
	for _, o := range opts {
		o(&cfg, f.up)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv, f.addr = srv, ln.Addr().(*net.TCPAddr)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// config returns a pgx configuration for user through the gateway.
func (f *fixture) config(t *testing.T, user, token string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=require connect_timeout=10", f.addr.Port))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = user, token
	cfg.TLSConfig = f.clientTLS.Clone()
	cfg.Fallbacks = nil
	return cfg
}

// connect connects through the gateway as alice to the cluster's role.
func (f *fixture) connect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, f.config(t, f.role+"@pg", aliceToken))
	if err != nil {
		t.Fatalf("connect through the gateway: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// checkLeaks fails t if gateway goroutines outlive it (checked after the
// later-registered cleanups, which close the server).
func checkLeaks(t *testing.T) {
	t.Cleanup(func() {
		var stacks string
		for range 100 {
			buf := make([]byte, 1<<20)
			stacks = string(buf[:runtime.Stack(buf, true)])
			if !strings.Contains(stacks, "gateway/postgres.(*relay)") && !strings.Contains(stacks, "gateway/postgres.(*Server)") {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("gateway goroutines leaked:\n%s", stacks)
	})
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
