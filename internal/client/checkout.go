package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Lease is a check-out of an account.
type Lease struct {
	ID           string    `json:"lease_id"`
	Account      string    `json:"account"` // "target/username"
	Holder       string    `json:"holder"`  // actor: "user:alice"
	Reason       string    `json:"reason"`
	Ticket       string    `json:"ticket,omitempty"`
	CheckedOutAt time.Time `json:"checked_out_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	EndedAt      time.Time `json:"ended_at,omitzero"`
	EndReason    string    `json:"end_reason,omitempty"` // checkin, expired, forced, holder_disabled
}

// Checkout is a new lease with the credential it hands out, shown only in
// this answer: Password for password and API-key accounts, PrivateKey for
// SSH-key accounts.
type Checkout struct {
	Lease
	Password   string `json:"password,omitempty"`
	PrivateKey string `json:"private_key,omitempty"`
}

// CheckoutRequest asks for an account's credential.
type CheckoutRequest struct {
	Reason string        // required
	Ticket string        // "": none
	TTL    time.Duration // 0: the server's default
	// Wait joins the account's FIFO waitlist when it is fully checked out
	// and returns when served. Use a client from WithoutTimeout and bound
	// the wait with ctx.
	Wait bool
}

// Waiter is a place in an account's waitlist.
type Waiter struct {
	Account    string    `json:"account"`
	Principal  string    `json:"principal"` // actor: "user:alice"
	EnqueuedAt time.Time `json:"enqueued_at"`
	Position   int       `json:"position"` // 1: served next
}

// LeaseList is the open leases and the waitlists.
type LeaseList struct {
	Leases  []Lease  `json:"leases"`
	Waiting []Waiter `json:"waiting"`
}

// Checkout checks out account "target/username". A fully checked-out
// account fails with a conflict naming its holders, unless r.Wait.
func (c *Client) Checkout(ctx context.Context, account string, r CheckoutRequest) (Checkout, error) {
	p, err := accountPath(account)
	if err != nil {
		return Checkout{}, err
	}
	req := struct {
		Reason string `json:"reason"`
		Ticket string `json:"ticket,omitempty"`
		TTL    string `json:"ttl,omitempty"`
		Wait   bool   `json:"wait,omitempty"`
	}{Reason: r.Reason, Ticket: r.Ticket, Wait: r.Wait}
	if r.TTL != 0 {
		req.TTL = r.TTL.String()
	}
	var res Checkout
	err = c.do(ctx, http.MethodPost, p+"/checkout", nil, req, &res)
	return res, err
}

// Checkin ends the caller's lease on account and returns it.
func (c *Client) Checkin(ctx context.Context, account string) (Lease, error) {
	p, err := accountPath(account)
	if err != nil {
		return Lease{}, err
	}
	var res Lease
	err = c.do(ctx, http.MethodPost, p+"/checkin", nil, nil, &res)
	return res, err
}

// Leases lists open leases and waiters, of one account or of all ("").
func (c *Client) Leases(ctx context.Context, account string) (LeaseList, error) {
	q := url.Values{}
	if account != "" {
		q.Set("account", account)
	}
	var res LeaseList
	err := c.do(ctx, http.MethodGet, "/v1/leases", q, nil, &res)
	return res, err
}

// ExtendLease moves the expiry of the caller's lease to ttl from now.
func (c *Client) ExtendLease(ctx context.Context, id string, ttl time.Duration) (Lease, error) {
	req := struct {
		TTL string `json:"ttl"`
	}{ttl.String()}
	var res Lease
	err := c.do(ctx, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/extend", nil, req, &res)
	return res, err
}

// ForceCheckin ends anyone's lease (administrators).
func (c *Client) ForceCheckin(ctx context.Context, id string) (Lease, error) {
	var res Lease
	err := c.do(ctx, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/force-checkin", nil, nil, &res)
	return res, err
}
