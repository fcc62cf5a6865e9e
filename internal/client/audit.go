package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/audit"
)

// AuditFilter selects audit events. Zero fields select everything.
type AuditFilter struct {
	Actor, Action string
	Since, Until  time.Time
	After         int64
	Limit         int
}

func (f AuditFilter) query() url.Values {
	q := url.Values{}
	if f.Actor != "" {
		q.Set("actor", f.Actor)
	}
	if f.Action != "" {
		q.Set("action", f.Action)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.Format(time.RFC3339Nano))
	}
	if f.After > 0 {
		q.Set("after", strconv.FormatInt(f.After, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// AuditList returns one page of events in ascending order.
func (c *Client) AuditList(ctx context.Context, f AuditFilter) ([]audit.Event, error) {
	var res struct {
		Events []audit.Event `json:"events"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/audit/events", f.query(), nil, &res)
	return res.Events, err
}

// AuditVerify asks the server to verify the whole chain.
func (c *Client) AuditVerify(ctx context.Context) (audit.Report, error) {
	var rep audit.Report
	err := c.do(ctx, http.MethodGet, "/v1/audit/verify", nil, nil, &rep)
	return rep, err
}

// AuditExport streams the selected events as JSON Lines to w.
func (c *Client) AuditExport(ctx context.Context, w io.Writer, f AuditFilter) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/audit/export", f.query(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("client: audit export: %w", err)
	}
	return nil
}
