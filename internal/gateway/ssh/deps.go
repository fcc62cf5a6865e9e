package ssh

import (
	"context"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/identity"
)

// The gateway's dependencies, declared where they are used. The server's
// composition root adapts the real ones: authz.Authorizer satisfies
// Authorizer and audit.Log satisfies Auditor as they are; the recording
// package and the vault need thin adapters (Recorder, Resolver).

// Authorizer decides whether a principal may connect to an account or
// forward a port through it (Authorize, audited), and re-checks a live
// connection's request (Check, not audited: see gateway.Watch).
// *authz.Authorizer implements it.
type Authorizer interface {
	Authorize(ctx context.Context, o audit.Origin, req authz.Request) (authz.Decision, error)
	Check(ctx context.Context, req authz.Request) (authz.Decision, error)
}

// Auditor takes the gateway's own audit events (see Config.Audit).
// *audit.Log implements it.
type Auditor interface {
	Append(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Resolver finds the upstream of a connection and the credential to log in
// with. The vault-backed implementation checks the account out for the
// session; Upstream.Release checks it in (which may rotate it).
type Resolver interface {
	// DefaultAccount returns the account p logs in as when the SSH user
	// name names only a target ("web1" rather than "root@web1"), or ""
	// when there is none and p must name one (the connection is then
	// refused, telling the user so). It fails for a target the gateway
	// cannot reach; a ProxyJump channel calls it to tell a target from
	// any other host. It is called before authorization, so it must not
	// check anything out.
	DefaultAccount(ctx context.Context, p identity.Principal, target string) (string, error)
	// Resolve returns how to reach account on target for p, who has
	// already been authorized to connect. OriginFrom(ctx) tells whom and
	// where from, for the Resolver's own audit events.
	Resolve(ctx context.Context, p identity.Principal, target, account string) (Upstream, error)
}

// originKey is the context key of a connection's audit origin.
type originKey struct{}

// WithOrigin returns ctx carrying o, as the gateway calls a Resolver (and
// as a Resolver's tests may).
func WithOrigin(ctx context.Context, o audit.Origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

// OriginFrom returns the audit origin of the connection a Resolver is
// called for: the principal as actor, the client's address as source and
// the connection's id as request id.
func OriginFrom(ctx context.Context) (audit.Origin, bool) {
	o, ok := ctx.Value(originKey{}).(audit.Origin)
	return o, ok
}

// Upstream is a resolved target account.
type Upstream struct {
	Addr    string          // host:port of the target's sshd
	HostKey gossh.PublicKey // pinned host key; nil: none
	// HostCA, if set, accepts a host certificate it signed whose
	// principals include Addr's host, besides HostKey. One of HostKey and
	// HostCA is required.
	HostCA gossh.PublicKey
	User   string // the login name on the target
	Auth   []gossh.AuthMethod
	// Expires, if not zero, ends the connection (lease expiry).
	Expires time.Time
	// Rules are the target's command rules, applied to the connection's
	// sessions in order. Nil: none.
	Rules []Rule
	// GrantID and LeaseID are recorded in the session's metadata.
	GrantID, LeaseID string
	// Release, if set, is called exactly once when the connection ends,
	// with its final status (StatusClosed, StatusKilled, …), or when
	// the upstream cannot be reached (StatusFailed).
	Release func(status string)
}

// Recorder starts session recordings. The recording package's Recorder is
// adapted to it.
type Recorder interface {
	Start(ctx context.Context, o audit.Origin, m Meta) (Recording, error)
}

// Kind is the kind of a recorded session.
type Kind string

// KindSSH is the only kind the gateway records.
const KindSSH Kind = "ssh"

// Meta describes a recorded session.
type Meta struct {
	Kind      Kind
	Principal string // "user:alice"
	Target    string
	Account   string
	Source    string // the client's IP address
	Command   string // exec: the command line; subsystem: "subsystem:sftp"; shell: ""
	PTY       bool
	Width     int
	Height    int
	GrantID   string
	LeaseID   string
}

// EventType is the type of a recorded event.
type EventType string

// The recorded event types.
const (
	Output EventType = "o" // bytes sent to the user
	Input  EventType = "i" // bytes typed by the user
	Resize EventType = "r" // "COLSxROWS"
	File   EventType = "f" // an SFTP file operation, JSON
	Note   EventType = "n" // a gateway note: a rule match, a kill
)

// Recording is one session's recording.
type Recording interface {
	Record(typ EventType, data []byte) error
	AddBytes(in, out int64)
	// Context ends when the session must end (killed). KillMessage then
	// says why, for the user.
	Context() context.Context
	KillMessage() string
	Close(ctx context.Context, status string) error
	ID() string
}

// LineBuffer reconstructs command lines from terminal input; Feed returns
// the lines that data completed, with line editing applied.
type LineBuffer interface {
	Feed(data []byte) []string
}
