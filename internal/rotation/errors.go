package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

// Error is a rotation step on the target that failed, as the rotation's
// caller may see it: the account, the step, the cause's category and what
// became of the account. It leaves out the connector's and the target's
// own words (a server message may quote the statement it refused); Err,
// the whole story, is for the server log, which the engine writes when it
// returns the error. The engine returns it wrapped in an errkind.Error of
// the cause's kind.
type Error struct {
	Account string // "prod-pg/postgres"
	Step    string // what failed: "setting the new password on prod-pg"
	Cause   string // its category: "permission denied (SQLSTATE 42501)"
	State   string // what became of the account: "the current credential stays"
	Err     error
}

func (e *Error) Error() string {
	msg := "rotation: " + e.Account + ": " + e.Step + " failed: " + e.Cause
	if e.State != "" {
		msg += "; " + e.State
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// targetError is the error of a rotation whose step on the target failed
// with cause, after settle ended as res (with serr).
func targetError(j *job, step string, cause error, res Result, serr error) error {
	text, kind := describe(cause, j.o.RequestID)
	err := &Error{Account: j.acct.ID, Step: step, Cause: text, State: stateAfter(res.Outcome),
		Err: errors.Join(fmt.Errorf("rotation: %s: %s: %w", j.acct.ID, step, cause), serr)}
	return errkind.Wrap(kind, err)
}

// credentialNoun names an account's kind of credential for messages.
func credentialNoun(k connector.CredentialKind) string {
	switch k {
	case connector.SSHKey:
		return "SSH key"
	case connector.APIKey:
		return "API key"
	}
	return "password"
}

// stateAfter says what a settled rotation left.
func stateAfter(o Outcome) string {
	switch o {
	case Kept:
		return "the current credential stays"
	case Rotated, Reset:
		return "the target took the new credential after all, and it is now current"
	case Undecided:
		return "the new credential stays pending until the target can tell which one it has (recovery retries)"
	case OutOfSync:
		return "neither the current nor the new credential logs in: the account is out of sync"
	}
	return ""
}

// sqlStater is implemented by database errors that carry a SQLSTATE
// (*pgconn.PgError).
type sqlStater interface{ SQLState() string }

// describe names the category of a connector's error in words that may be
// shown, with the errkind the rotation's error gets. The target's own
// message is never used; Warder's own kinded messages and a connector's
// rejection (connector.Rejected, which never holds a credential) are.
func describe(err error, requestID string) (string, errkind.Kind) {
	var st sqlStater
	switch {
	case errors.As(err, &st) && st.SQLState() != "":
		code := st.SQLState()
		text, kind := sqlState(code)
		return text + " (SQLSTATE " + code + ")", kind
	case isRejected(err):
		return err.Error(), errkind.Conflict
	case errors.Is(err, context.DeadlineExceeded):
		return "the target did not answer in time", errkind.Unavailable
	case errors.Is(err, context.Canceled):
		return "the request was cancelled", errkind.Unavailable
	case errkind.Of(err) != errkind.Other:
		return err.Error(), errkind.Of(err)
	}
	text := "the target returned an error; the server log has details"
	if requestID != "" {
		text += " under request id " + requestID
	}
	return text, errkind.Conflict
}

// notSent wraps an error that kept a change from being sent to the
// target at all.
type notSent struct{ err error }

func (e notSent) Error() string { return e.err.Error() }
func (e notSent) Unwrap() error { return e.err }

// refusedOutright reports whether a change that failed with err certainly
// did not happen on the target: it was never sent (notSent), or the
// target answered it with a SQLSTATE of a refusal (permission, syntax,
// login, invalid role: the statement was not executed), not of a lost
// connection, an interrupted transaction or a shutdown, after which it
// may or may not have been applied. Connectors that keep no SQLSTATE
// (SSH, Redis) never give a certain refusal.
func refusedOutright(err error) bool {
	var ns notSent
	if errors.As(err, &ns) {
		return true
	}
	var st sqlStater
	if !errors.As(err, &st) || st.SQLState() == "" {
		return false
	}
	_, kind := sqlState(st.SQLState())
	return kind == errkind.Conflict
}

// sqlState names a SQLSTATE's class (PostgreSQL, Appendix A).
func sqlState(code string) (string, errkind.Kind) {
	if code == "42501" {
		return "permission denied", errkind.Conflict
	}
	switch code[:min(2, len(code))] {
	case "08":
		return "connection failure", errkind.Unavailable
	case "28":
		return "login refused", errkind.Conflict
	case "3D":
		return "no such database", errkind.Conflict
	case "0L", "0P":
		return "invalid role", errkind.Conflict
	case "40":
		return "transaction rolled back", errkind.Unavailable
	case "42":
		return "statement refused (syntax error or access rule violation)", errkind.Conflict
	case "53":
		return "the target is out of resources", errkind.Unavailable
	case "57":
		return "the statement was cancelled or the target is shutting down", errkind.Unavailable
	}
	return "the target refused the statement", errkind.Conflict
}

// failureCategory is the "error" detail of a failed rotation's audit
// event: the cause's category, never a secret nor the target's words.
func failureCategory(err error) string {
	var re *Error
	switch {
	case errors.As(err, &re):
		return clipText(re.Cause, 256)
	case errors.Is(err, ErrBusy):
		return "busy"
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return "cancelled"
	}
	return errkind.Of(err).String()
}

// reportFailure logs a failed rotation of j with its whole error, and
// audits it as "account.rotate" with outcome failure, the outcome and the
// cause's category, unless the vault has audited its end already (a
// pending version dropped, the current credential staying; or promoted
// after all) or it is a background attempt that found the account busy
// and will retry.
func (e *Engine) reportFailure(ctx context.Context, j *job, res Result, err error, wait bool) {
	if errors.Is(err, ErrBusy) && !wait {
		return
	}
	e.logger.Warn("rotation failed", "account", j.acct.ID, "request_id", j.o.RequestID, "outcome", res.Outcome, "err", err)
	if j.dropped || res.Outcome == Rotated || res.Outcome == Reset {
		return
	}
	details := map[string]string{"error": failureCategory(err)}
	if res.Outcome != "" {
		details["outcome"] = string(res.Outcome)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, aerr := e.audit.Append(actx, j.o.Event("account.rotate", "account:"+j.acct.ID, audit.OutcomeFailure, details)); aerr != nil {
		e.logger.Error("audit failed rotation", "account", j.acct.ID, "err", aerr)
	}
}

// clipText shortens s to at most n bytes without splitting a character.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
