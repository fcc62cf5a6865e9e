package access

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/errkind"
)

// Webhook is an endpoint that receives notifications by HTTP POST.
type Webhook struct {
	// URL is https://..., or http:// to a loopback address.
	URL string `json:"url" yaml:"url"`
	// Kind is the payload: "json" (the Notification itself; the default)
	// or "slack" (a Slack incoming-webhook message, {"text": "..."}).
	Kind string `json:"kind" yaml:"kind"`
	// Secret, if set, signs each body: header X-Warder-Signature is
	// "sha256=" and the hex HMAC-SHA256 of the body under Secret. It is
	// configuration, never sent or logged.
	Secret string `json:"-" yaml:"secret"`
}

// SignatureHeader carries a body's HMAC when the webhook has a secret.
const SignatureHeader = "X-Warder-Signature"

// WebhooksConfig configures Webhooks. NewWebhooks does not modify it.
type WebhooksConfig struct {
	// Webhooks are the endpoints; each gets every notification.
	Webhooks []Webhook
	// Client sends the requests. Nil: an http.Client with a 10s timeout.
	Client *http.Client
	// Logger receives delivery failures. Nil: discard.
	Logger *slog.Logger
	// QueueSize bounds the notifications waiting per webhook; more are
	// dropped (and logged). Zero: 256.
	QueueSize int
	// Attempts is how often a delivery is tried. Zero: 5.
	Attempts int
	// Backoff is the wait before the second attempt, doubling after.
	// Zero: 1s.
	Backoff time.Duration
}

// Webhooks delivers notifications to webhooks, asynchronously: Notify
// queues, Run delivers, one goroutine per webhook, retrying failures
// (transport errors, 408, 429 and 5xx) with backoff. It is safe for
// concurrent use.
type Webhooks struct {
	hooks    []Webhook
	client   *http.Client
	log      *slog.Logger
	attempts int
	backoff  time.Duration
	queues   []chan Notification // one per hook; never closed: Run's workers end with its context
}

// NewWebhooks checks cfg and returns Webhooks; call Run to deliver.
func NewWebhooks(cfg WebhooksConfig) (*Webhooks, error) {
	w := &Webhooks{client: cfg.Client, log: cfg.Logger, attempts: cfg.Attempts, backoff: cfg.Backoff}
	if cfg.QueueSize < 0 || cfg.Attempts < 0 || cfg.Backoff < 0 {
		return nil, errkind.New(errkind.Invalid, "access: negative webhook queue size, attempts or backoff")
	}
	if w.client == nil {
		w.client = &http.Client{Timeout: 10 * time.Second}
	}
	if w.log == nil {
		w.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if w.attempts == 0 {
		w.attempts = 5
	}
	if w.backoff == 0 {
		w.backoff = time.Second
	}
	size := cfg.QueueSize
	if size == 0 {
		size = 256
	}
	for i, h := range cfg.Webhooks {
		if err := checkWebhook(&h); err != nil {
			return nil, fmt.Errorf("access: webhook %d: %w", i+1, err)
		}
		w.hooks = append(w.hooks, h)
		w.queues = append(w.queues, make(chan Notification, size))
	}
	return w, nil
}

// checkWebhook validates h and defaults its kind.
func checkWebhook(h *Webhook) error {
	if h.Kind == "" {
		h.Kind = "json"
	}
	if h.Kind != "json" && h.Kind != "slack" {
		return errkind.New(errkind.Invalid, "kind must be json or slack")
	}
	u, err := url.Parse(h.URL)
	if err != nil || u.Host == "" || u.User != nil {
		return errkind.New(errkind.Invalid, "the URL must be absolute, without user information")
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return errkind.New(errkind.Invalid, "plain http is allowed to loopback addresses only")
		}
	default:
		return errkind.New(errkind.Invalid, "the URL scheme must be https")
	}
	return nil
}

// Notify queues n for every webhook without blocking; when a webhook's
// queue is full, n is dropped for it and logged.
func (w *Webhooks) Notify(n Notification) {
	for i, q := range w.queues {
		select {
		case q <- n:
		default:
			w.log.Warn("access: webhook queue full; notification dropped", "webhook", redact(w.hooks[i].URL), "event", n.Event)
		}
	}
}

// Run delivers queued notifications until ctx ends, then returns once its
// workers have; notifications still queued then are dropped.
func (w *Webhooks) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range w.hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case n := <-w.queues[i]:
					w.deliver(ctx, w.hooks[i], n)
				}
			}
		}()
	}
	wg.Wait()
}

// deliver posts n to h, retrying as documented on Webhooks.
func (w *Webhooks) deliver(ctx context.Context, h Webhook, n Notification) {
	body, err := payload(h.Kind, n)
	if err != nil {
		w.log.Error("access: encode notification", "err", err)
		return
	}
	wait := w.backoff
	for attempt := 1; ; attempt++ {
		retry, err := w.post(ctx, h, body)
		if err == nil {
			return
		}
		if !retry || attempt >= w.attempts {
			w.log.Warn("access: webhook delivery failed", "webhook", redact(h.URL), "event", n.Event, "attempts", attempt, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// post sends body once; retry says whether a failure may pass.
func (w *Webhooks) post(ctx context.Context, h Webhook, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "warder")
	if h.Secret != "" {
		m := hmac.New(sha256.New, []byte(h.Secret))
		m.Write(body)
		req.Header.Set(SignatureHeader, "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("post: %s", strings.ReplaceAll(err.Error(), h.URL, redact(h.URL)))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("status %d", resp.StatusCode)
	}
	return false, fmt.Errorf("status %d", resp.StatusCode)
}

// payload encodes n for a webhook of kind.
func payload(kind string, n Notification) ([]byte, error) {
	if kind == "slack" {
		return json.Marshal(map[string]string{"text": slackText(n)})
	}
	return json.Marshal(n)
}

// slackText is a one-line summary of n.
func slackText(n Notification) string {
	var b strings.Builder
	if n.Severity != "" {
		fmt.Fprintf(&b, "[%s] ", strings.ToUpper(n.Severity))
	}
	fmt.Fprintf(&b, "Warder: access %s — role %s for %s", strings.ReplaceAll(n.Event, "_", " "), n.Role, n.Principal)
	if n.Actor != n.Principal {
		fmt.Fprintf(&b, ", by %s", n.Actor)
	}
	if n.RequestID != "" {
		fmt.Fprintf(&b, "; request %s", n.RequestID)
		if n.Kind == KindExtension {
			b.WriteString(" (extension)")
		}
	}
	if n.TTL != "" && n.Event == EventRequested {
		fmt.Fprintf(&b, " for %s", n.TTL)
	}
	if n.Event == EventEmergency {
		fmt.Fprintf(&b, ", without approval; approvers %s", n.ApproverGroup)
	} else if n.Approvals != "" {
		fmt.Fprintf(&b, ", approvals %s from %s", n.Approvals, n.ApproverGroup)
	}
	if n.GrantID != "" {
		fmt.Fprintf(&b, "; grant %s until %s", n.GrantID, n.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if n.Ticket != "" {
		fmt.Fprintf(&b, "; ticket %s", n.Ticket)
	}
	if n.Reason != "" {
		fmt.Fprintf(&b, "; reason: %s", n.Reason)
	}
	if n.Comment != "" {
		fmt.Fprintf(&b, "; comment: %s", n.Comment)
	}
	if n.IncidentID != "" {
		fmt.Fprintf(&b, "; post-incident review %s", n.IncidentID)
	}
	return b.String()
}

// redact returns u's scheme and host: webhook paths often hold tokens
// (Slack's do).
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return p.Scheme + "://" + p.Host + "/..."
}
