package client

import (
	"bytes"
	"context"
	"errors"
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
	After         int64 // only events with a greater seq
	Before        int64 // only events with a smaller seq
	// Desc asks AuditList for the newest events first. AuditExport
	// always streams in ascending order and refuses it.
	Desc  bool
	Limit int
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
	if f.Before > 0 {
		q.Set("before", strconv.FormatInt(f.Before, 10))
	}
	if f.Desc {
		q.Set("order", "desc")
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// AuditPage is one page of audit events.
type AuditPage struct {
	// Events are in ascending seq order, or descending if the filter
	// asked for Desc.
	Events []audit.Event `json:"events"`
	// More is true when further events match beyond this page.
	More bool `json:"more"`
}

// AuditList returns one page of events.
func (c *Client) AuditList(ctx context.Context, f AuditFilter) (AuditPage, error) {
	var res AuditPage
	err := c.do(ctx, http.MethodGet, "/v1/audit/events", f.query(), nil, &res)
	return res, err
}

// AuditVerify asks the server to verify the whole chain.
func (c *Client) AuditVerify(ctx context.Context) (audit.Report, error) {
	var rep audit.Report
	err := c.do(ctx, http.MethodGet, "/v1/audit/verify", nil, nil, &rep)
	return rep, err
}

// exportTrailer is the trailer with which the server confirms a complete
// export: the number of lines it sent (api.ExportTrailer).
const exportTrailer = "Warder-Export-Events"

// ErrExportIncomplete is returned by AuditExport when the stream ended
// without the server's confirmation that it is complete: the server failed
// mid-stream, or the connection was cut. What was written to w is a
// truncated export.
var ErrExportIncomplete = errors.New("client: audit export is incomplete: the stream ended before the server confirmed it; do not use the output")

// AuditExport streams the selected events as JSON Lines to w. It fails
// with ErrExportIncomplete (or the read error) if the stream was cut short,
// having then written only part of the export to w.
func (c *Client) AuditExport(ctx context.Context, w io.Writer, f AuditFilter) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/audit/export", f.query(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	cw := &lineCounter{w: w}
	if _, err := io.Copy(cw, resp.Body); err != nil {
		return fmt.Errorf("%w: %w", ErrExportIncomplete, err)
	}
	// Trailers are read with the end of the body.
	want := resp.Trailer.Get(exportTrailer)
	if want == "" || want != strconv.FormatInt(cw.lines, 10) || (cw.n > 0 && cw.last != '\n') {
		return ErrExportIncomplete
	}
	return nil
}

// lineCounter counts the bytes and lines written through it and remembers
// the last byte.
type lineCounter struct {
	w     io.Writer
	n     int64
	lines int64
	last  byte
}

func (lc *lineCounter) Write(p []byte) (int, error) {
	n, err := lc.w.Write(p)
	if n > 0 {
		lc.n += int64(n)
		lc.lines += int64(bytes.Count(p[:n], []byte{'\n'}))
		lc.last = p[n-1]
	}
	return n, err
}
