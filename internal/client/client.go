// Package client is the Go SDK for Warder's HTTP API; the CLI is built on it.
//
// A Client speaks only HTTPS. It trusts the CA file it is given (the
// server's generated ca.pem in dev mode) or the system roots.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/pki"
)

// Config says where the server is and who is calling.
type Config struct {
	Addr   string // https://host:port; "" means https://127.0.0.1:8200
	Token  string // sent as a bearer token; "" for open endpoints
	CACert string // PEM file of the CA to trust; "" means the system roots
	// Timeout bounds each request-and-answer call; 0 means 60 seconds.
	// Streams (audit export) and waits (checkout --wait) are bounded only
	// by their context.
	Timeout time.Duration
}

// DefaultAddr is where the CLI looks for a server when WARDER_ADDR is unset.
const DefaultAddr = "https://127.0.0.1:8200"

// Client calls the API. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	token   string
	timeout time.Duration // per call of do; 0: none
	http    *http.Client
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	u, err := url.Parse(cfg.Addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("client: address %q is not a URL such as https://127.0.0.1:8200", cfg.Addr)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("client: address %q must use https: Warder serves only TLS", cfg.Addr)
	}
	tc, err := pki.ClientTLSConfig(cfg.CACert)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
	return &Client{base: u, token: cfg.Token, timeout: cfg.Timeout, http: &http.Client{Transport: tr}}, nil
}

// WithoutTimeout returns a client whose calls are bounded only by their
// context, for requests that wait on purpose (checkout --wait).
func (c *Client) WithoutTimeout() *Client {
	cc := *c
	cc.timeout = 0
	return &cc
}

// Error is an error answer from the server.
type Error struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *Error) Error() string {
	return e.Message
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil). okStatuses lists additional statuses whose body
// is a normal answer rather than an error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, okStatuses ...int) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, query, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	ok := resp.StatusCode/100 == 2
	for _, s := range okStatuses {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, 64<<20))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, query url.Values, in any) (*http.Response, error) {
	// path is already escaped (segments go through url.PathEscape), so it
	// sets RawPath; Path is its decoded form.
	u := *c.base
	u.RawPath = strings.TrimSuffix(c.base.EscapedPath(), "/") + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("client: bad path %q: %w", path, err)
	}
	u.Path = p
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("client: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, c.base.Host, unwrapURLError(err))
	}
	return resp, nil
}

// unwrapURLError drops url.Error's repetition of the full URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeError(resp *http.Response) error {
	var body struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(raw, &body); err != nil || body.Error.Code == "" {
		return &Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("server answered %s", resp.Status)}
	}
	return &Error{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message, RequestID: body.Error.RequestID}
}
