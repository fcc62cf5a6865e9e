package rotation

import (
	"context"
	"crypto/subtle"
	"errors"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

// memTarget is a real in-memory target system: accounts with passwords,
// a management account that may change any of them, and switches that
// make it fail the way real systems do — before or after applying a
// change, or not answering at all.
type memTarget struct {
	mu       sync.Mutex
	accounts map[string]string // username → password
	mgmt     string

	// failChangeBefore makes the next Change fail without applying it.
	failChangeBefore bool
	// failChangeAfter makes the next Change apply, then report an error
	// (a connection cut before the acknowledgement).
	failChangeAfter bool
	// down makes every call fail as unreachable.
	down bool
	// refuseChange, if set, is what every Change returns, without
	// applying it (a management account the target does not let change
	// this account).
	refuseChange error
	// changeDelay makes every Change take this long (a slow target).
	changeDelay time.Duration
	// noLogin refuses every login as this user whatever its password (a
	// PostgreSQL role WITH NOLOGIN, sshd refusing passwords), while
	// Change still sets it.
	noLogin string
	// changes counts applied changes.
	changes int
	// files holds dependents written: path → line.
	files map[string]string
}

// errDown is what a real connector reports when it cannot reach the
// target: an Unavailable error.
var errDown = errkind.New(errkind.Unavailable, "memtarget: connection refused")

func newMemTarget(mgmt string) *memTarget {
	return &memTarget{accounts: map[string]string{}, mgmt: mgmt, files: map[string]string{}}
}

func (m *memTarget) set(user, pw string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accounts[user] = pw
}

func (m *memTarget) password(user string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accounts[user]
}

func (m *memTarget) Kind() string                       { return "mem" }
func (m *memTarget) CheckTarget(connector.Target) error { return nil }
func (m *memTarget) Kinds() []connector.CredentialKind {
	return []connector.CredentialKind{connector.Password}
}
func (m *memTarget) login(user string, secret []byte) error {
	if user == m.noLogin {
		return connector.Rejected("memtarget: %s may not log in", user)
	}
	pw, ok := m.accounts[user]
	if !ok || subtle.ConstantTimeCompare([]byte(pw), secret) != 1 {
		return connector.Rejected("memtarget: login as %s", user)
	}
	return nil
}

func (m *memTarget) Verify(ctx context.Context, t connector.Target, user string, c connector.Credential) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errDown
	}
	return m.login(user, c.Secret)
}

func (m *memTarget) Change(ctx context.Context, t connector.Target, req connector.ChangeRequest) error {
	m.mu.Lock()
	delay := m.changeDelay
	m.mu.Unlock()
	time.Sleep(delay)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errDown
	}
	if m.refuseChange != nil {
		return m.refuseChange
	}
	if req.As != nil {
		if req.As.Username != m.mgmt {
			return errors.New("memtarget: not a management account")
		}
		if err := m.login(req.As.Username, req.As.Credential.Secret); err != nil {
			return err
		}
	} else {
		if req.Current == nil {
			return errors.New("memtarget: no credential to log in with")
		}
		if err := m.login(req.Username, req.Current.Secret); err != nil {
			return err
		}
	}
	if m.failChangeBefore {
		m.failChangeBefore = false
		return errors.New("memtarget: connection reset before the change")
	}
	m.accounts[req.Username] = string(req.Next.Secret)
	m.changes++
	if m.failChangeAfter {
		m.failChangeAfter = false
		return errors.New("memtarget: connection reset after the change")
	}
	return nil
}

// sqlError is a database error with a SQLSTATE, as *pgconn.PgError is;
// its message quotes what a server's might (the statement).
type sqlError struct{ code, msg string }

func (e *sqlError) Error() string    { return "ERROR: " + e.msg + " (SQLSTATE " + e.code + ")" }
func (e *sqlError) SQLState() string { return e.code }

func (m *memTarget) UpdateDependent(ctx context.Context, t connector.Target, as connector.Login, d connector.Dependent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errDown
	}
	if err := m.login(as.Username, as.Credential.Secret); err != nil {
		return err
	}
	m.files[d.Path] = d.Line
	return nil
}
