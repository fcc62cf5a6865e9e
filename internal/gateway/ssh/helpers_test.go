package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/sshca"
	"github.com/warderhq/warder/internal/testenv"
)

// env is a gateway in front of a real sshd, with in-memory dependencies.
type env struct {
	t        testing.TB
	sshd     *testenv.SSHDServer
	user     *user.User // the target account, logged in to by password
	password string
	ca       gossh.Signer // the user CA
	host     gossh.Signer // the gateway's host key
	hostCA   gossh.Signer // the gateway's host CA, for ProxyJump
	srv      *Server
	addr     string
	rec      *memRecorder
	audit    *memAudit
	authz    *fakeAuthz
	res      *fakeResolver
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	return newEnvSSHD(t, testenv.SSHDOptions{}, mod)
}

// newEnvSSHD is newEnv with a target sshd started with opts.
func newEnvSSHD(t *testing.T, opts testenv.SSHDOptions, mod func(*Config)) *env {
	t.Helper()
	sshd := testenv.SSHDWith(t, opts)
	pw := "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-Secret!"
	u := testenv.LinuxUser(t, pw)
	hostKey, _, _, _, err := gossh.ParseAuthorizedKey([]byte(sshd.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, sshd: sshd, user: u, password: pw,
		ca: newSigner(t), host: newSigner(t), hostCA: newSigner(t),
		rec: &memRecorder{}, audit: &memAudit{}, authz: &fakeAuthz{},
	}
	e.res = &fakeResolver{targets: map[string]Upstream{
		"web1": {Addr: sshd.Addr(), HostKey: hostKey, User: u.Username, Auth: []gossh.AuthMethod{gossh.Password(pw)}},
	}, defaultAccount: u.Username}
	cfg := Config{
		HostSigner:    e.host,
		HostCA:        e.hostCA,
		UserCA:        e.ca.PublicKey(),
		Authz:         e.authz,
		Upstream:      e.res,
		Recorder:      e.rec,
		Audit:         e.audit,
		NewLineBuffer: RecordingLineBuffer,
		DialTimeout:   10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.addr = srv, ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		checkNoLeaks(t)
	})
	return e
}

// checkNoLeaks fails t if goroutines of this package are still running a
// few seconds after the server closed.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	var stacks string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "gateway/ssh.(*") && !strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "checkNoLeaks") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return
		}
		stacks = strings.Join(leaked, "\n\n")
	}
	t.Errorf("leaked goroutines:\n%s", stacks)
}

func newSigner(t testing.TB) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// certSpec describes a test user certificate.
type certSpec struct {
	principals []string
	keyID      string
	after      time.Time
	before     time.Time
	certType   uint32
	ca         gossh.Signer // nil: the env's CA
	token      string       // the login token it is bound to (sshca.TokenExt); "": none
}

// cert returns a user key and a certificate for it signed as spec says.
func (e *env) cert(spec certSpec) (gossh.Signer, *gossh.Certificate) {
	e.t.Helper()
	key := newSigner(e.t)
	c := e.signCert(spec, key.PublicKey())
	signer, err := gossh.NewCertSigner(c, key)
	if err != nil {
		e.t.Fatal(err)
	}
	return signer, c
}

func (e *env) signCert(spec certSpec, pub gossh.PublicKey) *gossh.Certificate {
	e.t.Helper()
	if spec.after.IsZero() {
		spec.after = time.Now().Add(-time.Minute)
	}
	if spec.before.IsZero() {
		spec.before = time.Now().Add(time.Hour)
	}
	if spec.certType == 0 {
		spec.certType = gossh.UserCert
	}
	if spec.ca == nil {
		spec.ca = e.ca
	}
	c := &gossh.Certificate{
		Key: pub, CertType: spec.certType, KeyId: spec.keyID, ValidPrincipals: spec.principals,
		ValidAfter: uint64(spec.after.Unix()), ValidBefore: uint64(spec.before.Unix()),
		Permissions: gossh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if spec.token != "" {
		c.Permissions.Extensions[sshca.TokenExt] = spec.token
	}
	if err := c.SignCert(rand.Reader, spec.ca); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// dial connects to the gateway as alice asking for user.
func (e *env) dial(user string) (*gossh.Client, error) {
	signer, _ := e.cert(certSpec{principals: []string{"user:alice"}})
	return e.dialWith(user, signer)
}

func (e *env) dialWith(user string, signer gossh.Signer) (*gossh.Client, error) {
	return gossh.Dial("tcp", e.addr, &gossh.ClientConfig{
		User:            user,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.FixedHostKey(e.host.PublicKey()),
		Timeout:         10 * time.Second,
	})
}

func (e *env) mustDial(user string) *gossh.Client {
	e.t.Helper()
	c, err := e.dial(user)
	if err != nil {
		e.t.Fatalf("dial gateway as %q: %v", user, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// writeUserKey writes a key and its certificate for alice into dir, for
// the real ssh, scp and sftp, and returns the key's path (the
// certificate's is that plus "-cert.pub").
func (e *env) writeUserKey(dir string) string {
	e.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	sshPub, err := gossh.NewPublicKey(pub)
	if err != nil {
		e.t.Fatal(err)
	}
	cert := e.signCert(certSpec{principals: []string{"user:alice"}}, sshPub)
	block, err := gossh.MarshalPrivateKey(priv, "alice")
	if err != nil {
		e.t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "id_ed25519")
	writeFile(e.t, keyPath, pem.EncodeToMemory(block), 0o600)
	writeFile(e.t, keyPath+"-cert.pub", gossh.MarshalAuthorizedKey(cert), 0o644)
	return keyPath
}

// opensshArgs writes a key, its certificate and a known_hosts file for
// the real ssh, scp and sftp, and returns their common options and the
// gateway's port.
func (e *env) opensshArgs() ([]string, string) {
	e.t.Helper()
	dir := e.t.TempDir()
	keyPath := e.writeUserKey(dir)
	host, port, _ := net.SplitHostPort(e.addr)
	kh := fmt.Sprintf("[%s]:%s %s", host, port, gossh.MarshalAuthorizedKey(e.host.PublicKey()))
	writeFile(e.t, filepath.Join(dir, "known_hosts"), []byte(kh), 0o644)
	return []string{
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + filepath.Join(dir, "known_hosts"),
		"-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityFile=" + keyPath,
		"-o", "CertificateFile=" + keyPath + "-cert.pub",
		"-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR",
	}, port
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// memRecorder is an in-memory Recorder.
type memRecorder struct {
	mu       sync.Mutex
	sessions []*memRecording
	fail     error // Start fails with it when set
}

func (r *memRecorder) Start(ctx context.Context, o audit.Origin, m Meta) (Recording, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	rec := &memRecording{meta: m, origin: o, id: fmt.Sprintf("rec-%d", len(r.sessions)+1)}
	rec.ctx, rec.cancel = context.WithCancel(context.Background())
	r.sessions = append(r.sessions, rec)
	return rec, nil
}

// wait returns the n-th recording once it exists.
func (r *memRecorder) wait(t testing.TB, n int) *memRecording {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		if len(r.sessions) > n {
			s := r.sessions[n]
			r.mu.Unlock()
			return s
		}
		r.mu.Unlock()
	}
	t.Fatalf("recording %d was not started", n)
	return nil
}

type memEvent struct {
	typ  EventType
	data string
}

type memRecording struct {
	id     string
	meta   Meta
	origin audit.Origin
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	events  []memEvent
	in, out int64
	status  string // set by Close
	killMsg string
}

func (r *memRecording) Record(typ EventType, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status != "" {
		return errors.New("recording: closed")
	}
	r.events = append(r.events, memEvent{typ, string(data)})
	return nil
}

func (r *memRecording) AddBytes(in, out int64) {
	r.mu.Lock()
	r.in += in
	r.out += out
	r.mu.Unlock()
}

func (r *memRecording) Context() context.Context { return r.ctx }

func (r *memRecording) KillMessage() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.killMsg
}

func (r *memRecording) kill(msg string) {
	r.mu.Lock()
	if r.killMsg == "" {
		r.killMsg = msg
	}
	r.mu.Unlock()
	r.cancel()
}

func (r *memRecording) Close(ctx context.Context, status string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
	r.cancel()
	return nil
}

func (r *memRecording) ID() string { return r.id }

// waitClosed waits for Close and returns the status.
func (r *memRecording) waitClosed(t testing.TB) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		s := r.status
		r.mu.Unlock()
		if s != "" {
			return s
		}
	}
	t.Fatalf("recording %s was not closed", r.id)
	return ""
}

// stream returns the concatenated data of the events of type typ.
func (r *memRecording) stream(typ EventType) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, ev := range r.events {
		if ev.typ == typ {
			b.WriteString(ev.data)
		}
	}
	return b.String()
}

func (r *memRecording) all(typ EventType) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		if ev.typ == typ {
			out = append(out, ev.data)
		}
	}
	return out
}

// memAudit is an in-memory Auditor.
type memAudit struct {
	mu     sync.Mutex
	events []audit.Event
}

func (a *memAudit) Append(ctx context.Context, ev audit.Event) (audit.Event, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, ev)
	return ev, nil
}

func (a *memAudit) find(action string) []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []audit.Event
	for _, ev := range a.events {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

// fakeAuthz allows everything but the resources in deny and the actions
// in denyAction, and keeps the requests it saw (Authorize) and counts
// re-checks (Check).
type fakeAuthz struct {
	mu         sync.Mutex
	deny       map[string]bool
	denyAction map[string]bool
	notAfter   time.Time // of allowing decisions
	checkErr   error     // Check fails with it when set
	reqs       []authz.Request
	checks     int
}

func (a *fakeAuthz) decide(req authz.Request) authz.Decision {
	if a.deny[req.Resource.String()] || a.denyAction[req.Action] {
		return authz.Decision{Decision: "deny"}
	}
	return authz.Decision{Allow: true, Decision: "allow", NotAfter: a.notAfter}
}

func (a *fakeAuthz) Authorize(ctx context.Context, o audit.Origin, req authz.Request) (authz.Decision, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, req)
	return a.decide(req), nil
}

func (a *fakeAuthz) Check(ctx context.Context, req authz.Request) (authz.Decision, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks++
	if a.checkErr != nil {
		return authz.Decision{}, a.checkErr
	}
	return a.decide(req), nil
}

// set changes the fake's answers while connections run.
func (a *fakeAuthz) set(f func(a *fakeAuthz)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

// requests returns the Authorize requests for action.
func (a *fakeAuthz) requests(action string) []authz.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []authz.Request
	for _, r := range a.reqs {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

// setRules gives target web1 rules, for the connections made afterwards.
func (e *env) setRules(rules ...Rule) {
	e.res.mu.Lock()
	defer e.res.mu.Unlock()
	up := e.res.targets["web1"]
	up.Rules = rules
	e.res.targets["web1"] = up
}

// fakeResolver serves fixed upstreams and notes releases.
type fakeResolver struct {
	mu             sync.Mutex
	targets        map[string]Upstream
	defaultAccount string // "": none, the user must name the account
	released       []string
}

func (r *fakeResolver) DefaultAccount(ctx context.Context, p identity.Principal, target string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.targets[target]; !ok {
		return "", fmt.Errorf("no target %q", target)
	}
	return r.defaultAccount, nil
}

func (r *fakeResolver) Resolve(ctx context.Context, p identity.Principal, target, account string) (Upstream, error) {
	r.mu.Lock()
	up, ok := r.targets[target]
	r.mu.Unlock()
	if !ok {
		return Upstream{}, fmt.Errorf("no target %q", target)
	}
	up.Release = func(status string) {
		r.mu.Lock()
		r.released = append(r.released, status)
		r.mu.Unlock()
	}
	return up, nil
}

func (r *fakeResolver) waitReleased(t testing.TB, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		got := append([]string(nil), r.released...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
	}
	t.Fatalf("fewer than %d releases", n)
	return nil
}

// syncBuffer collects output written by another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) waitFor(t testing.TB, re *regexp.Regexp) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if re.MatchString(s.String()) {
			return
		}
	}
	t.Fatalf("output never matched %s; got:\n%q", re, s.String())
}

// opensshConfig writes an ssh_config file like the one `warder
// ssh-config` prints: a "gw" host for the gateway, logged in to as
// jumpUser, and "*.warder" hosts reached through it with ProxyJump, with a
// known_hosts file that pins the gateway's key and trusts its host CA for
// *.warder. It returns the file's path, for ssh -F.
func (e *env) opensshConfig(jumpUser string) string {
	e.t.Helper()
	dir := e.t.TempDir()
	keyPath := e.writeUserKey(dir)
	host, port, _ := net.SplitHostPort(e.addr)
	known := filepath.Join(dir, "known_hosts")
	writeFile(e.t, known, fmt.Appendf(nil, "[%s]:%s %s@cert-authority *.warder %s", host, port,
		gossh.MarshalAuthorizedKey(e.host.PublicKey()), gossh.MarshalAuthorizedKey(e.hostCA.PublicKey())), 0o644)
	common := fmt.Sprintf(`    IdentityFile %s
    CertificateFile %s-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile %s
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
`, keyPath, keyPath, known)
	cfg := fmt.Sprintf("Host gw\n    HostName %s\n    Port %s\n    User %s\n%s\nHost *.warder !gw\n    ProxyJump gw\n%s", host, port, jumpUser, common, common)
	path := filepath.Join(dir, "ssh_config")
	writeFile(e.t, path, []byte(cfg), 0o644)
	return path
}

// jumpDial logs in to the gateway as outerUser with outer, then through
// a ProxyJump channel to addr as account with inner. It checks the nested
// host key: a certificate of the host CA for the host of addr.
func (e *env) jumpDial(outerUser string, outer gossh.Signer, addr, account string, inner gossh.Signer) (*gossh.Client, *gossh.Client, error) {
	oc, err := e.dialWith(outerUser, outer)
	if err != nil {
		return nil, nil, err
	}
	nc, err := oc.Dial("tcp", addr)
	if err != nil {
		oc.Close()
		return nil, nil, err
	}
	checker := &gossh.CertChecker{IsHostAuthority: func(k gossh.PublicKey, _ string) bool {
		return keysEqual(k, e.hostCA.PublicKey())
	}}
	sc, chans, reqs, err := gossh.NewClientConn(nc, addr, &gossh.ClientConfig{
		User:              account,
		Auth:              []gossh.AuthMethod{gossh.PublicKeys(inner)},
		HostKeyCallback:   checker.CheckHostKey,
		HostKeyAlgorithms: []string{gossh.CertAlgoED25519v01},
		Timeout:           10 * time.Second,
	})
	if err != nil {
		nc.Close()
		oc.Close()
		return nil, nil, err
	}
	return oc, gossh.NewClient(sc, chans, reqs), nil
}
