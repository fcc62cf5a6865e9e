package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Session describes a recorded gateway session.
type Session struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"` // "ssh" or "db"
	Principal string    `json:"principal"`
	Target    string    `json:"target"`
	Account   string    `json:"account,omitempty"`
	Source    string    `json:"source,omitempty"`
	Command   string    `json:"command,omitempty"`
	PTY       bool      `json:"pty"`
	GrantID   string    `json:"grant_id,omitempty"` // the just-in-time grant it used
	LeaseID   string    `json:"lease_id,omitempty"` // the check-out it used
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	BytesIn   int64     `json:"bytes_in"`
	BytesOut  int64     `json:"bytes_out"`
	Events    int64     `json:"events"`
	Status    string    `json:"status"`
	SHA256    string    `json:"sha256,omitempty"`
}

// SessionDetail is a session with what was typed or run in it.
type SessionDetail struct {
	Session
	Commands   []string          `json:"commands,omitempty"`
	Statements []json.RawMessage `json:"statements,omitempty"`
}

// SessionFilter selects sessions.
type SessionFilter struct {
	Kind      string
	Principal string
	Active    bool
	Limit     int // at most this many, newest first; 0: the server's default (100), at most 1000
}

// Sessions lists recorded sessions, newest first.
func (c *Client) Sessions(ctx context.Context, f SessionFilter) ([]Session, error) {
	q := url.Values{}
	if f.Kind != "" {
		q.Set("kind", f.Kind)
	}
	if f.Principal != "" {
		q.Set("principal", f.Principal)
	}
	if f.Active {
		q.Set("active", "1")
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var res struct {
		Sessions []Session `json:"sessions"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/sessions", q, nil, &res)
	return res.Sessions, err
}

// Session returns one session with its commands or statements.
func (c *Client) Session(ctx context.Context, id string) (SessionDetail, error) {
	var d SessionDetail
	err := c.do(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, nil, &d)
	return d, err
}

// SessionRecording streams a session's asciicast v2 recording to w.
func (c *Client) SessionRecording(ctx context.Context, id string, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id)+"/recording", nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("client: session recording: %w", err)
	}
	return nil
}

// LiveEvent is one event of a live session: seconds since its start, type
// ("o" output, "i" input, "r" resize …) and data.
type LiveEvent struct {
	Time float64
	Type string
	Data string
}

// JoinSession calls fn with each event of a live session until it ends or
// ctx is done. Bounded only by ctx.
func (c *Client) JoinSession(ctx context.Context, id string, fn func(LiveEvent) error) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id)+"/live", nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var raw [3]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			return fmt.Errorf("client: live session: %w", err)
		}
		var ev LiveEvent
		if json.Unmarshal(raw[0], &ev.Time) != nil || json.Unmarshal(raw[1], &ev.Type) != nil || json.Unmarshal(raw[2], &ev.Data) != nil {
			return fmt.Errorf("client: live session: malformed event")
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("client: live session: %w", err)
	}
	return nil
}

// KillSession terminates a live session; the user sees message.
func (c *Client) KillSession(ctx context.Context, id, message string) error {
	return c.do(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/kill", nil, map[string]string{"message": message}, nil)
}
