package access

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/vault"
)

// clock is a settable clock shared by access and authz.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// memIdentity is an in-memory group directory.
type memIdentity struct {
	mu      sync.Mutex
	parents map[identity.Member][]string
}

func (m *memIdentity) add(kind, name string, groups ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := identity.Member{Kind: kind, Name: name}
	m.parents[k] = append(m.parents[k], groups...)
}

func (m *memIdentity) Parents(ctx context.Context, kind, name string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.parents[identity.Member{Kind: kind, Name: name}]), nil
}

// Group returns group name with its direct members; a group exists while
// something is a member of it or it is a member of something.
func (m *memIdentity) Group(ctx context.Context, name string) (identity.Group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := identity.Group{Name: name, Members: []identity.Member{}}
	found := len(m.parents[identity.Member{Kind: "group", Name: name}]) > 0
	for k, gs := range m.parents {
		if slices.Contains(gs, name) {
			g.Members, found = append(g.Members, k), true
		}
	}
	if !found {
		return identity.Group{}, errkind.New(errkind.NotFound, "identity: no group %q", name)
	}
	slices.SortFunc(g.Members, func(a, b identity.Member) int { return strings.Compare(a.Kind+":"+a.Name, b.Kind+":"+b.Name) })
	return g, nil
}

func (m *memIdentity) Groups(ctx context.Context) ([]identity.Group, error) {
	m.mu.Lock()
	names := map[string]bool{}
	for k, gs := range m.parents {
		for _, g := range gs {
			names[g] = true
		}
		if k.Kind == "group" {
			names[k.Name] = true
		}
	}
	m.mu.Unlock()
	var out []identity.Group
	for _, n := range slices.Sorted(maps.Keys(names)) {
		g, err := m.Group(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

func (m *memIdentity) RemoveMember(ctx context.Context, o audit.Origin, group string, mb identity.Member) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	gs := m.parents[mb]
	i := slices.Index(gs, group)
	if i < 0 {
		return errkind.New(errkind.NotFound, "identity: %s %q is not a member of group %q", mb.Kind, mb.Name, group)
	}
	m.parents[mb] = slices.Delete(slices.Clone(gs), i, i+1)
	return nil
}

// rotator is a Rotator that records what it is asked to rotate.
type rotator struct {
	mu   sync.Mutex
	accs []string
}

func (r *rotator) Trigger(ctx context.Context, account, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.accs = append(r.accs, account)
}

func (r *rotator) triggered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.accs)
}

// resolver answers authz's entity questions from memIdentity and the
// Account "t/u" in Target "t" rule.
type resolver struct{ id *memIdentity }

func (r resolver) Parents(ctx context.Context, uid authz.UID) ([]authz.UID, error) {
	var kind string
	switch uid.Type {
	case authz.TypeUser:
		kind = "user"
	case authz.TypeMachine:
		kind = "machine"
	case authz.TypeGroup:
		kind = "group"
	case authz.TypeAccount:
		t, _, _ := strings.Cut(uid.ID, "/")
		return []authz.UID{{Type: authz.TypeTarget, ID: t}}, nil
	default:
		return nil, nil
	}
	gs, _ := r.id.Parents(ctx, kind, uid.ID)
	var out []authz.UID
	for _, g := range gs {
		out = append(out, authz.UID{Type: authz.TypeGroup, ID: g})
	}
	return out, nil
}

// memVault holds targets and management credentials.
type memVault struct {
	targets map[string]vault.Target
	creds   map[string]connector.Credential
}

func (v *memVault) Target(ctx context.Context, name string) (vault.Target, error) {
	t, ok := v.targets[name]
	if !ok {
		return vault.Target{}, errkind.New(errkind.NotFound, "vault: no target %q", name)
	}
	return t, nil
}

func (v *memVault) CurrentCredential(ctx context.Context, id string) (int64, connector.Credential, error) {
	c, ok := v.creds[id]
	if !ok {
		return 0, c, errkind.New(errkind.NotFound, "vault: no account %q", id)
	}
	return 1, c, nil
}

// fakeUser is an ephemeral user on a fakeDB.
type fakeUser struct {
	password   string
	validUntil time.Time
	roles      []string
}

// fakeDB is an in-memory database target kind "fakedb" whose management
// login is mgmt/mgmt-pw. fail, when set, fails the next Create or Drop.
type fakeDB struct {
	mu    sync.Mutex
	users map[string]fakeUser // by target name + "/" + username
	fail  error
}

func newFakeDB() *fakeDB { return &fakeDB{users: map[string]fakeUser{}} }

func (f *fakeDB) Kind() string                       { return "fakedb" }
func (f *fakeDB) CheckTarget(connector.Target) error { return nil }
func (f *fakeDB) Kinds() []connector.CredentialKind {
	return []connector.CredentialKind{connector.Password}
}
func (f *fakeDB) Change(context.Context, connector.Target, connector.ChangeRequest) error { return nil }

func (f *fakeDB) Verify(ctx context.Context, t connector.Target, username string, c connector.Credential) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.users[t.Name+"/"+username]; ok && u.password == string(c.Secret) {
		return nil
	}
	return connector.Rejected("fakedb: %s", username)
}

func (f *fakeDB) login(as connector.Login) error {
	if as.Username != "mgmt" || string(as.Credential.Secret) != "mgmt-pw" {
		return connector.Rejected("fakedb: management login")
	}
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	return nil
}

func (f *fakeDB) CreateEphemeral(ctx context.Context, t connector.Target, as connector.Login, spec connector.EphemeralSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.login(as); err != nil {
		return err
	}
	f.users[t.Name+"/"+spec.Username] = fakeUser{password: string(spec.Password), validUntil: spec.ValidUntil, roles: slices.Clone(spec.Roles)}
	return nil
}

func (f *fakeDB) DropEphemeral(ctx context.Context, t connector.Target, as connector.Login, username string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.login(as); err != nil {
		return err
	}
	delete(f.users, t.Name+"/"+username)
	return nil
}

func (f *fakeDB) ListEphemeral(ctx context.Context, t connector.Target, as connector.Login, prefix string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.login(as); err != nil {
		return nil, err
	}
	var out []string
	for k := range f.users {
		if tn, u, _ := strings.Cut(k, "/"); tn == t.Name && strings.HasPrefix(u, prefix) {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (f *fakeDB) user(target, name string) (fakeUser, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[target+"/"+name]
	return u, ok
}

func (f *fakeDB) put(target, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[target+"/"+name] = fakeUser{password: "x"}
}

func (f *fakeDB) failNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// memCipher is AES-256-GCM under a random key, with the AAD bound.
type memCipher struct{ aead cipher.AEAD }

func newMemCipher() *memCipher {
	key := make([]byte, 32)
	rand.Read(key)
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	return &memCipher{aead: g}
}

func aadBytes(a barrier.AAD) []byte { return fmt.Appendf(nil, "%q|%q|%d", a.Kind, a.ID, a.Version) }

func (c *memCipher) Encrypt(ctx context.Context, aad barrier.AAD, pt []byte) ([]byte, error) {
	nonce := make([]byte, c.aead.NonceSize())
	rand.Read(nonce)
	return c.aead.Seal(nonce, nonce, pt, aadBytes(aad)), nil
}

func (c *memCipher) Decrypt(ctx context.Context, aad barrier.AAD, ct []byte) ([]byte, error) {
	n := c.aead.NonceSize()
	if len(ct) < n {
		return nil, errors.New("short ciphertext")
	}
	return c.aead.Open(nil, ct[:n], ct[n:], aadBytes(aad))
}

// recorder is a Notifier that keeps what it is told.
type recorder struct {
	mu sync.Mutex
	ns []Notification
}

func (r *recorder) Notify(n Notification) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ns = append(r.ns, n)
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.ns {
		out = append(out, n.Event)
	}
	return out
}

// env is an Access on a fresh store with a real audit log and Authorizer.
type env struct {
	db    *store.DB
	log   *audit.Log
	az    *authz.Authorizer
	ids   *memIdentity
	vault *memVault
	fake  *fakeDB
	clk   *clock
	notes *recorder
	rot   *rotator
	a     *Access
}

var (
	admin = audit.Origin{Actor: "user:admin", Source: "192.0.2.1", RequestID: "req-1"}
	alice = identity.Principal{Kind: identity.KindUser, Name: "alice"}
	bob   = identity.Principal{Kind: identity.KindUser, Name: "bob"}
	carol = identity.Principal{Kind: identity.KindUser, Name: "carol"}
	dave  = identity.Principal{Kind: identity.KindUser, Name: "dave"}
	eve   = identity.Principal{Kind: identity.KindUser, Name: "eve"}
)

// origin is the audit origin of a call by p.
func origin(p identity.Principal) audit.Origin {
	return audit.Origin{Actor: p.Actor(), Source: "192.0.2.9"}
}

// newEnv opens an Access on db. The clock starts at 2026-01-07 12:00 UTC.
// Groups: alice and bob in dba; bob, alice and group senior in approvers;
// carol in senior. Target pg1 (kind fakedb) has management account mgmt.
func newEnv(t testing.TB, db *store.DB) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{db: db, clk: &clock{t: time.Date(2026, 1, 7, 12, 0, 0, 0, time.UTC)},
		ids: &memIdentity{parents: map[identity.Member][]string{}}, fake: newFakeDB(), notes: &recorder{}, rot: &rotator{}}
	e.ids.add("user", "alice", "dba", "approvers")
	e.ids.add("user", "bob", "dba", "approvers")
	e.ids.add("group", "senior", "approvers")
	e.ids.add("user", "carol", "senior")
	e.ids.add("user", "dave", "approvers")
	e.vault = &memVault{
		targets: map[string]vault.Target{"pg1": {Name: "pg1", Kind: "fakedb", Host: "db.example", Port: 5432, ManagementAccount: "mgmt"}},
		creds:   map[string]connector.Credential{"pg1/mgmt": {Kind: connector.Password, Secret: []byte("mgmt-pw")}},
	}
	var err error
	if e.log, err = audit.New(ctx, audit.Config{DB: db, Now: e.clk.Now}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.log.Close() })
	if e.az, err = authz.New(ctx, authz.Config{DB: db, Audit: e.log, Entities: resolver{e.ids}, Now: e.clk.Now}); err != nil {
		t.Fatal(err)
	}
	e.a, err = New(ctx, Config{DB: db, Audit: e.log, Authz: e.az, Identity: e.ids, Vault: e.vault,
		Connectors: connector.Registry{"fakedb": e.fake}, Barrier: newMemCipher(), Notifier: e.notes, Rotator: e.rot, Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const pg1Template = `permit(principal == ?principal, action == Action::"checkout", resource in Target::"pg1");`

// role creates a role on pg1, with an ephemeral user if eph.
func (e *env) role(t testing.TB, name string, eph bool) Role {
	t.Helper()
	spec := RoleSpec{Name: name, Description: "DBA on pg1", Template: pg1Template}
	if eph {
		spec.Ephemeral = &EphemeralRole{Target: "pg1", Roles: []string{"pg_read_all_data"}}
	}
	r, err := e.a.CreateRole(context.Background(), admin, spec)
	if err != nil {
		t.Fatalf("CreateRole: %v", err)
	}
	return r
}

func (e *env) eligible(t testing.TB, el Eligibility) {
	t.Helper()
	if el.MaxTTL == 0 {
		el.MaxTTL = 8 * time.Hour
	}
	if _, err := e.a.SetEligibility(context.Background(), admin, el); err != nil {
		t.Fatalf("SetEligibility: %v", err)
	}
}

func (e *env) request(t testing.TB, p identity.Principal, spec RequestSpec) Request {
	t.Helper()
	r, err := e.a.CreateRequest(context.Background(), origin(p), p, spec)
	if err != nil {
		t.Fatalf("CreateRequest: %v", err)
	}
	return r
}

func (e *env) approve(t testing.TB, p identity.Principal, id string) Request {
	t.Helper()
	r, err := e.a.Approve(context.Background(), origin(p), p, id, "ok", e.clk.Now())
	if err != nil {
		t.Fatalf("Approve by %s: %v", p.Name, err)
	}
	return r
}

// allowed asks the real Authorizer whether p may check out pg1/postgres.
func (e *env) allowed(t testing.TB, p identity.Principal) authz.Decision {
	t.Helper()
	d, err := e.az.Check(context.Background(), authz.Request{Principal: authz.UID{Type: authz.TypeUser, ID: p.Name},
		Action: authz.ActionCheckout, Resource: authz.UID{Type: authz.TypeAccount, ID: "pg1/postgres"}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return d
}

// actions lists the audited actions starting with "access.", in order.
func (e *env) actions(t testing.TB) []string {
	t.Helper()
	evs, err := e.log.List(context.Background(), audit.Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		if strings.HasPrefix(ev.Action, "access.") {
			out = append(out, ev.Action)
		}
	}
	return out
}

// wantErr fails unless err has kind k and wraps sentinel (if not nil).
func wantErr(t testing.TB, what string, err error, k errkind.Kind, sentinel error) {
	t.Helper()
	if !errkind.Is(err, k) || (sentinel != nil && !errors.Is(err, sentinel)) {
		t.Errorf("%s: %v (kind %v); want %v %v", what, err, errkind.Of(err), k, sentinel)
	}
}

// login is the management login of pg1.
func (v *memVault) login() connector.Login {
	return connector.Login{Username: "mgmt", Credential: v.creds["pg1/mgmt"]}
}
