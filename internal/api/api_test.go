package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
)

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

	evs, err := f.audit.List(ctx, audit.Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var deny, allow int
	for _, ev := range evs {
		switch {
		case ev.Action == "auth.request" && ev.Outcome == audit.OutcomeDeny:
			deny++
		case ev.Action == "authz.decide" && ev.Outcome == audit.OutcomeAllow && ev.Resource == `System::"warder"`:
			allow++
			if !strings.Contains(ev.Details["policies"], "admins") {
				t.Errorf("allow decision without its deciding policy: %+v", ev)
			}
		}
		for _, v := range ev.Details {
			if strings.Contains(v, token) {
				t.Fatalf("token leaked into audit event %+v", ev)
			}
		}
		if strings.Contains(ev.Actor+ev.Resource, token) {
			t.Fatalf("token leaked into audit event %+v", ev)
		}
	}
	// Two unauthenticated requests; two authorised ones (the second was
	// then refused for its bad query, after the decision).
	if deny != 2 || allow != 2 {
		t.Errorf("events: %d auth.request deny, %d authz.decide allow; want 2 and 2", deny, allow)
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

// A refusal is audited even when the path could not be stored as is.
func TestUnrecordablePathStillAudited(t *testing.T) {
	f := newFixture(t)
	f.initAndUnseal(t)
	long := "/v1/users/" + strings.Repeat("x", 3000) + "%ff%00"
	wantError(t, f.do(t, "GET", long, "wt1.000000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""), 401, "unauthenticated")
	evs, err := f.audit.List(context.Background(), audit.Filter{Action: "auth.request", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		if ev.Outcome == audit.OutcomeDeny && ev.Resource == "GET /v1/users/{name}" && len(ev.Details["path"]) <= 260 {
			found = true
		}
	}
	if !found {
		t.Errorf("no deny event for the long path among %d events", len(evs))
	}
}

// session show lists the command lines typed, reconstructed from input.
func TestSessionShowCommands(t *testing.T) {
	f := newFixture(t)
	token := f.initAndUnseal(t)
	id := mkSession(f, t, 0)
	r := f.do(t, "GET", "/v1/sessions/"+id, token, "")
	if r.status != 200 || !strings.Contains(r.body, `"commands":["ls -la"]`) {
		t.Fatalf("session show: %d %s", r.status, r.body)
	}
	r = f.do(t, "GET", "/v1/sessions/"+id+"/recording", token, "")
	if r.status != 200 || !strings.HasPrefix(r.body, `{"version":2`) {
		t.Fatalf("recording: %d %.200s", r.status, r.body)
	}
}
