package access

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/testenv"
)

// receiver is a loopback HTTP server that keeps what it is posted.
type receiver struct {
	srv *httptest.Server

	mu     sync.Mutex
	bodies map[string][][]byte // by path
	sigs   map[string][]string
	fail   int // answer 503 to this many requests first
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{bodies: map[string][][]byte{}, sigs: map[string][]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail > 0 {
			r.fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.bodies[req.URL.Path] = append(r.bodies[req.URL.Path], b)
		r.sigs[req.URL.Path] = append(r.sigs[req.URL.Path], req.Header.Get(SignatureHeader))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// wait returns the bodies posted to path once there are n.
func (r *receiver) wait(t *testing.T, path string, n int) ([][]byte, []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		b, s := append([][]byte(nil), r.bodies[path]...), append([]string(nil), r.sigs[path]...)
		r.mu.Unlock()
		if len(b) >= n {
			return b, s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s received %d bodies, want %d", path, len(b), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWebhooks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rcv := newReceiver(t)
	rcv.fail = 1 // the first delivery is retried
	hooks, err := NewWebhooks(WebhooksConfig{Backoff: 10 * time.Millisecond, Webhooks: []Webhook{
		{URL: rcv.srv.URL + "/json", Secret: "s3cret"},
		{URL: rcv.srv.URL + "/slack", Kind: "slack"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); hooks.Run(ctx) }()
	defer func() { cancel(); <-done }()

	e := newEnv(t, testenv.SQLite(t))
	e.a.notifier = hooks
	e.role(t, "prod-dba", true)
	e.eligible(t, Eligibility{Role: "prod-dba", Subject: Subject{SubjectGroup, "dba"}, Approvals: 1, ApproverGroup: "approvers",
		RequireTicket: `INC-[0-9]+`})
	r := e.request(t, alice, RequestSpec{Role: "prod-dba", TTL: 30 * time.Minute, Reason: "replica lag", Ticket: "INC-42"})
	r = e.approve(t, bob, r.ID)
	cred, err := e.a.RevealEphemeral(ctx, origin(alice), alice, r.GrantID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.RevokeGrant(ctx, admin, r.GrantID, "done"); err != nil {
		t.Fatal(err)
	}

	bodies, sigs := rcv.wait(t, "/json", 3)
	var events []string
	for i, b := range bodies {
		var n Notification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Fatalf("json body %s: %v", b, err)
		}
		events = append(events, n.Event)
		m := hmac.New(sha256.New, []byte("s3cret"))
		m.Write(b)
		if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); sigs[i] != want {
			t.Errorf("signature %q, want %q", sigs[i], want)
		}
		if n.Role != "prod-dba" || n.Principal != "user:alice" {
			t.Errorf("notification %+v", n)
		}
	}
	if strings.Join(events, ",") != "requested,approved,revoked" {
		t.Errorf("json events %q", events)
	}
	var first Notification
	json.Unmarshal(bodies[0], &first)
	if first.Ticket != "INC-42" || first.Reason != "replica lag" || first.Approvals != "0/1" || first.ApproverGroup != "approvers" {
		t.Errorf("requested: %+v", first)
	}

	slack, sigs := rcv.wait(t, "/slack", 3)
	for i, b := range slack {
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 || m["text"] == "" {
			t.Errorf("slack body %s: %v", b, err)
		}
		if sigs[i] != "" {
			t.Errorf("slack webhook without a secret got a signature")
		}
	}
	if !strings.Contains(string(slack[1]), "approved") || !strings.Contains(string(slack[1]), "user:bob") {
		t.Errorf("slack approval message: %s", slack[1])
	}
	for _, b := range append(bodies, slack...) {
		if strings.Contains(string(b), cred.Password) || strings.Contains(string(b), "mgmt-pw") || strings.Contains(string(b), "s3cret") {
			t.Errorf("a secret in a webhook body: %s", b)
		}
	}
}

func TestWebhookConfig(t *testing.T) {
	for _, h := range []Webhook{
		{URL: "http://example.com/hook"},
		{URL: "ftp://127.0.0.1/x"},
		{URL: "https://user:pw@example.com/"},
		{URL: "/relative"},
		{URL: "https://example.com/", Kind: "teams"},
	} {
		if _, err := NewWebhooks(WebhooksConfig{Webhooks: []Webhook{h}}); err == nil {
			t.Errorf("%+v accepted", h)
		}
	}
	for _, h := range []Webhook{{URL: "https://hooks.slack.com/services/x", Kind: "slack"}, {URL: "http://127.0.0.1:9/x"}, {URL: "http://[::1]/x"}} {
		if _, err := NewWebhooks(WebhooksConfig{Webhooks: []Webhook{h}}); err != nil {
			t.Errorf("%+v: %v", h, err)
		}
	}
}

// TestWebhookQueueNeverBlocks fills a queue nobody drains.
func TestWebhookQueueNeverBlocks(t *testing.T) {
	hooks, err := NewWebhooks(WebhooksConfig{QueueSize: 2, Webhooks: []Webhook{{URL: "http://127.0.0.1:9/x"}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			hooks.Notify(Notification{Event: EventRequested})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
}
