package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/operator"
	"github.com/warderhq/warder/internal/testenv"
)

type fixture struct {
	srv   *httptest.Server
	audit *audit.Log
	b     *barrier.Barrier
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db := testenv.SQLite(t)
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	lg, err := audit.New(ctx, audit.Config{DB: db, Signer: audit.BarrierSigner(b)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	id, err := identity.New(ctx, identity.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Config{
		Operator: &operator.Operator{Barrier: b, Audit: lg, Identity: id},
		Barrier:  b, Audit: lg, Identity: id,
		Registry:        prometheus.NewRegistry(),
		MaxRequestBytes: 4096,
		ExposeUnsealKey: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, audit: lg, b: b}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) do(t *testing.T, method, path, token, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

type errBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

func wantError(t *testing.T, r reply, status int, code string) errBody {
	t.Helper()
	var e errBody
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("body %q is not an error body: %v", r.body, err)
	}
	if r.status != status || e.Error.Code != code {
		t.Fatalf("got %d %q (%s), want %d %q", r.status, e.Error.Code, e.Error.Message, status, code)
	}
	if e.Error.RequestID == "" || e.Error.RequestID != r.header.Get("X-Request-Id") {
		t.Errorf("request id %q in body, %q in header", e.Error.RequestID, r.header.Get("X-Request-Id"))
	}
	return e
}

// initAndUnseal returns the admin token of a freshly initialised server.
func (f *fixture) initAndUnseal(t *testing.T) string {
	t.Helper()
	r := f.do(t, "POST", "/v1/sys/init", "", `{"shares":3,"threshold":2}`)
	if r.status != 200 {
		t.Fatalf("init: %d %s", r.status, r.body)
	}
	var ir api.InitResponse
	json.Unmarshal([]byte(r.body), &ir)
	for _, s := range ir.Shares[:2] {
		body, _ := json.Marshal(api.UnsealRequest{Share: s})
		if r := f.do(t, "POST", "/v1/sys/unseal", "", string(body)); r.status != 200 {
			t.Fatalf("unseal: %d %s", r.status, r.body)
		}
	}
	if f.b.Sealed() {
		t.Fatal("still sealed after threshold shares")
	}
	return ir.AdminToken
}

func TestSealedRefusesDataOperations(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/v1/audit/events", "/v1/audit/verify", "/v1/auth/token/self"} {
		wantError(t, f.do(t, "GET", p, "", ""), 503, "sealed")
	}
	wantError(t, f.do(t, "POST", "/v1/sys/rotate-key", "", ""), 503, "sealed")
	if r := f.do(t, "GET", "/v1/sys/health", "", ""); r.status != 501 {
		t.Errorf("health of an uninitialised server: %d, want 501", r.status)
	}
	f.initAndUnseal(t)
	if r := f.do(t, "GET", "/v1/sys/health", "", ""); r.status != 200 {
		t.Errorf("health of an unsealed server: %d, want 200", r.status)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"empty", "", 400, "invalid"},
		{"malformed", `{"shares":`, 400, "invalid"},
		{"wrong type", `{"shares":"five"}`, 400, "invalid"},
		{"unknown field", `{"shares":3,"threshold":2,"sharez":1}`, 400, "invalid"},
		{"trailing", `{"shares":3,"threshold":2} {}`, 400, "invalid"},
		{"too large", `{"shares":3,"threshold":2,"x":"` + strings.Repeat("a", 5000) + `"}`, 413, "too_large"},
		{"threshold above shares", `{"shares":2,"threshold":3}`, 400, "invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, f.do(t, "POST", "/v1/sys/init", "", c.body), c.status, c.code)
		})
	}
	// None of that initialised anything.
	var st barrier.Status
	json.Unmarshal([]byte(f.do(t, "GET", "/v1/sys/seal-status", "", "").body), &st)
	if st.Initialized {
		t.Fatal("bad init requests initialised the server")
	}
	wantError(t, f.do(t, "POST", "/v1/sys/unseal", "", `{"share":"wsh1-garbage"}`), 400, "invalid")
	wantError(t, f.do(t, "GET", "/v1/no/such/thing", "", ""), 404, "not_found")
}

func TestAuthDecisionsAreAudited(t *testing.T) {
	f := newFixture(t)
	token := f.initAndUnseal(t)
	ctx := context.Background()

	wantError(t, f.do(t, "GET", "/v1/audit/events", "", ""), 401, "unauthenticated")
	wantError(t, f.do(t, "GET", "/v1/audit/events", "wt1.000000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""), 401, "unauthenticated")
	if r := f.do(t, "GET", "/v1/audit/events?limit=1000", token, ""); r.status != 200 {
		t.Fatalf("audit events with admin token: %d %s", r.status, r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/audit/events?since=yesterday", token, ""), 400, "invalid")

	evs, err := f.audit.List(ctx, audit.Filter{Action: "auth.request", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var deny, allow int
	for _, ev := range evs {
		switch ev.Outcome {
		case audit.OutcomeDeny:
			deny++
		case audit.OutcomeAllow:
			allow++
		}
		if strings.Contains(ev.Actor+ev.Resource+ev.Details["reason"], token) {
			t.Fatalf("token leaked into audit event %+v", ev)
		}
	}
	if deny != 2 || allow != 2 {
		t.Errorf("auth.request events: %d deny, %d allow; want 2 and 2", deny, allow)
	}
}

func TestFailClosedWithoutAudit(t *testing.T) {
	f := newFixture(t)
	token := f.initAndUnseal(t)
	f.audit.Close() // the audit log can no longer be written
	r := f.do(t, "GET", "/v1/audit/events", token, "")
	wantError(t, r, 503, "unavailable")
	r = f.do(t, "POST", "/v1/sys/rotate-key", token, "")
	wantError(t, r, 503, "unavailable")
}

func TestMetrics(t *testing.T) {
	f := newFixture(t)
	f.do(t, "GET", "/v1/sys/seal-status", "", "")
	r := f.do(t, "GET", "/metrics", "", "")
	if r.status != 200 || !strings.Contains(r.body, `warder_http_requests_total{code="200",route="GET /v1/sys/seal-status"} 1`) || !strings.Contains(r.body, "warder_sealed 1") {
		t.Errorf("metrics missing expected series:\n%.2000s", r.body)
	}
}
