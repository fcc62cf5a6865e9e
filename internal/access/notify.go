package access

import (
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/audit"
)

// Notification tells of a state change of a request or a grant. It never
// holds a secret: no password, no token.
type Notification struct {
	Event     string    `json:"event"` // one of the Event constants
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`     // who caused it: "user:bob", "system:access"
	Role      string    `json:"role"`      //
	Principal string    `json:"principal"` // the requester or grantee
	RequestID string    `json:"request_id,omitempty"`
	Kind      string    `json:"kind,omitempty"` // of the request: activation or extension
	GrantID   string    `json:"grant_id,omitempty"`
	TTL       string    `json:"ttl,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Ticket    string    `json:"ticket,omitempty"`
	// Approvals is "given/required", for requests.
	Approvals     string `json:"approvals,omitempty"`
	ApproverGroup string `json:"approver_group,omitempty"`
	// ExpiresAt is the grant's expiry, or the request's window.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Comment   string    `json:"comment,omitempty"`
	// IncidentID is the post-incident review an emergency opened.
	IncidentID string `json:"incident_id,omitempty"`
	// Severity is "high" for an emergency; "" otherwise.
	Severity string `json:"severity,omitempty"`
}

// The events.
const (
	EventRequested      = "requested"       // a request was made (activation or extension)
	EventApproved       = "approved"        // a request was fulfilled: a grant created or extended
	EventDenied         = "denied"          // a request was denied
	EventCancelled      = "cancelled"       // a request was withdrawn
	EventRequestExpired = "request_expired" // a request's window passed
	EventExpired        = "expired"         // a grant expired
	EventRevoked        = "revoked"         // a grant was revoked
	EventEmergency      = "emergency"       // a break-glass role was opened at once; for the approver group
)

// Notifier is told of every state change after it committed. Notify must
// not block; Webhooks implements it.
type Notifier interface {
	Notify(n Notification)
}

type nopNotifier struct{}

func (nopNotifier) Notify(Notification) {}

// notify tells of event on request r, with grant g if any.
func (a *Access) notify(event string, o audit.Origin, r Request, g *Grant) {
	n := Notification{
		Event: event, Time: a.now().UTC(), Actor: actor(o), Role: r.Role, Principal: r.Requester.Actor(),
		RequestID: r.ID, Kind: r.Kind, TTL: r.TTL.String(), Reason: r.Reason, Ticket: r.Ticket, ApproverGroup: r.ApproverGroup,
		ExpiresAt: r.ExpiresAt, Comment: r.Comment,
	}
	if r.ApprovalsRequired > 0 {
		n.Approvals = strconv.Itoa(len(r.Approvals)) + "/" + strconv.Itoa(r.ApprovalsRequired)
	}
	if g != nil {
		n.GrantID, n.ExpiresAt = g.ID, g.ExpiresAt
	} else if r.GrantID != "" {
		n.GrantID = r.GrantID
	}
	a.notifier.Notify(n)
}

// notifyGrant tells of event on grant g.
func (a *Access) notifyGrant(event string, o audit.Origin, g Grant, comment string) {
	a.notifier.Notify(Notification{
		Event: event, Time: a.now().UTC(), Actor: actor(o), Role: g.Role, Principal: g.Principal.Actor(),
		RequestID: g.RequestID, GrantID: g.ID, ExpiresAt: g.ExpiresAt, Comment: comment,
	})
}

// actor is o's actor as audit events name it.
func actor(o audit.Origin) string {
	if o.Actor == "" {
		return "anonymous"
	}
	return o.Actor
}
