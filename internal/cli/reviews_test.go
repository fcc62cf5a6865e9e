package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	campaignJSON = `{"id":"rv-1","scope":"role","target":"prod-dba","reviewer":"security","default":"revoke",
		"deadline":"2030-01-08T00:00:00Z","status":"open","created_at":"2030-01-01T00:00:00Z","created_by":"user:admin",
		"items":[
		{"id":"1","kind":"eligibility","subject":"group:dba","role":"prod-dba","detail":"1 approval from dba-leads","reviewer":"security","decision":"","defaulted":false,"applied":false},
		{"id":"2","kind":"grant","subject":"user:alice","role":"prod-dba","grant_id":"g-1","detail":"until 2030-01-01T02:10:00Z","reviewer":"security",
		 "decision":"revoke","defaulted":false,"decided_by":"user:carol","decided_at":"2030-01-02T00:00:00Z","comment":"left the team","applied":true}]}`
	itemJSON = `{"id":"2","kind":"grant","subject":"user:alice","role":"prod-dba","grant_id":"g-1","detail":"until 2030-01-01T02:10:00Z",
		"reviewer":"security","decision":"revoke","defaulted":false,"decided_by":"user:carol","decided_at":"2030-01-02T00:00:00Z","comment":"left the team","applied":true}`
	incidentJSON = `{"id":"in-1","grant_id":"g-9","request_id":"rq-9","role":"prod-root","principal":{"kind":"user","name":"alice"},
		"approver_group":"dba-leads","reason":"db down","ticket":"INC-7","status":"open","opened_at":"2030-01-01T00:00:00Z"}`
	emergencyRequest = `{"id":"rq-9","kind":"activation","status":"approved","role":"prod-root","requester":{"kind":"user","name":"alice"},
		"ttl":"1h0m0s","reason":"db down","approvals_required":2,"approver_group":"dba-leads","emergency":true,"approvals":[],
		"created_at":"2030-01-01T00:00:00Z","expires_at":"2030-01-01T01:00:00Z","grant_id":"g-9"}`
)

func TestReviewStart(t *testing.T) {
	const start = "POST /v1/reviews"
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantBody map[string]any
	}{
		{"period in days", []string{"--scope", "role", "--target", "prod-dba", "--period", "7d"}, 0,
			map[string]any{"scope": "role", "target": "prod-dba", "period": "168h0m0s"}},
		{"go duration", []string{"--scope", "group", "--period", "36h"}, 0, map[string]any{"scope": "group", "period": "36h0m0s"}},
		{"days and hours", []string{"--scope", "group", "--period", "1d12h"}, 0, map[string]any{"scope": "group", "period": "36h0m0s"}},
		{"deadline and terms", []string{"--scope", "role", "--deadline", "2030-01-31T17:00:00Z", "--default", "keep", "--reviewer", "security"}, 0,
			map[string]any{"scope": "role", "deadline": "2030-01-31T17:00:00Z", "default": "keep", "reviewer": "security"}},
		{"no scope", []string{"--period", "7d"}, 2, nil},
		{"bad scope", []string{"--scope", "user", "--period", "7d"}, 2, nil},
		{"neither deadline nor period", []string{"--scope", "role"}, 2, nil},
		{"deadline and period", []string{"--scope", "role", "--period", "7d", "--deadline", "2030-01-31T17:00:00Z"}, 2, nil},
		{"bad deadline", []string{"--scope", "role", "--deadline", "2030-01-31"}, 2, nil},
		{"bad period", []string{"--scope", "role", "--period", "7x"}, 2, nil},
		{"bad default", []string{"--scope", "role", "--period", "7d", "--default", "delete"}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setupAccess(t, map[string]string{start: campaignJSON})
			r := runCLI("", append([]string{"review", "start"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			calls := f.called(start)
			if tc.wantBody == nil {
				if len(calls) != 0 {
					t.Errorf("calls %+v, want none", calls)
				}
				return
			}
			if len(calls) != 1 || !reflect.DeepEqual(calls[0].body, tc.wantBody) {
				t.Errorf("calls %+v, want one with body %v", calls, tc.wantBody)
			}
			if !strings.Contains(r.stdout, "rv-1") || !strings.Contains(r.stdout, "Items") || !strings.Contains(r.stderr, "2 item(s)") {
				t.Errorf("stdout %q, stderr %q: want the campaign id and its item count", r.stdout, r.stderr)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		setupAccess(t, map[string]string{start: campaignJSON})
		r := runCLI("", "review", "start", "--scope", "role", "--period", "7d", "--format", "json")
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil {
			t.Fatalf("exit %d, stdout %q (%v)", r.code, r.stdout, err)
		}
		if items, _ := got["items"].([]any); got["id"] != "rv-1" || len(items) != 2 {
			t.Errorf("json = %v: want the whole campaign with its items", got)
		}
		if r.stderr != "" {
			t.Errorf("stderr %q, want nothing with --format json", r.stderr)
		}
	})
}

func TestParsePeriod(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"7d", 168 * time.Hour},
		{"1d", 24 * time.Hour},
		{"36h", 36 * time.Hour},
		{"90m", 90 * time.Minute},
		{"1d12h", 36 * time.Hour},
		{"0d1h", time.Hour},
	} {
		if got, err := parsePeriod(tc.in); err != nil || got != tc.want {
			t.Errorf("parsePeriod(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "d", "0d", "0s", "-1d", "-2h", "1.5d", "7", "7 d", "1d-2d", "1d-2h", "7days", "d7"} {
		if got, err := parsePeriod(in); err == nil {
			t.Errorf("parsePeriod(%q) = %v, want an error", in, got)
		}
	}
}

func TestReviewReadCommands(t *testing.T) {
	f := setupAccess(t, map[string]string{
		"GET /v1/reviews":      `{"reviews":[` + campaignJSON + `]}`,
		"GET /v1/reviews/rv-1": campaignJSON,
		"GET /v1/reviews/rv-1/report": `{"campaign":` + campaignJSON + `,
			"counts":{"total":2,"kept":0,"revoked":1,"defaulted":0,"undecided":1}}`,
	})
	r := runCLI("", "review", "ls")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || !strings.Contains(lines[1], "rv-1") || !strings.Contains(lines[1], "security") {
		t.Errorf("review ls: exit %d, stdout %q", r.code, r.stdout)
	}
	r = runCLI("", "review", "show", "rv-1")
	if r.code != 0 {
		t.Fatalf("review show: exit %d, stderr %q", r.code, r.stderr)
	}
	var header, alice string
	for _, l := range strings.Split(r.stdout, "\n") {
		switch f := strings.Join(strings.Fields(l), " "); {
		case strings.HasPrefix(f, "ITEM "):
			header = f
		case strings.HasPrefix(f, "2 grant"):
			alice = f
		}
	}
	if header != "ITEM KIND SUBJECT DETAIL DECISION DECIDED BY" || !strings.Contains(alice, "user:alice") ||
		!strings.HasSuffix(alice, "revoke user:carol") {
		t.Errorf("review show: header %q, item %q in %q", header, alice, r.stdout)
	}
	r = runCLI("", "review", "report", "rv-1")
	if r.code != 0 || !strings.Contains(r.stdout, "Revoked") || !strings.Contains(r.stdout, "Undecided") {
		t.Errorf("review report: exit %d, stdout %q", r.code, r.stdout)
	}
	r = runCLI("", "review", "report", "rv-1", "--format", "json")
	var rep struct {
		Campaign struct {
			ID    string `json:"id"`
			Items []any  `json:"items"`
		} `json:"campaign"`
		Counts map[string]int `json:"counts"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || rep.Campaign.ID != "rv-1" ||
		len(rep.Campaign.Items) != 2 || rep.Counts["revoked"] != 1 || rep.Counts["undecided"] != 1 {
		t.Errorf("review report json: exit %d, stdout %q (%v)", r.code, r.stdout, err)
	}
	for _, c := range f.called("GET /v1/reviews/rv-1/report") {
		if c.query != "format=json" {
			t.Errorf("report query %q, want format=json", c.query)
		}
	}
}

func TestReviewReportCSV(t *testing.T) {
	const report = "GET /v1/reviews/rv-1/report"
	// Quoting, a field with a newline, a defused formula, CRLF and no
	// final newline: everything must come through untouched.
	body := "campaign,item,kind,subject,detail,comment\n" +
		"rv-1,1,eligibility,group:dba,\"1 approval, from \"\"leads\"\"\",'=HYPERLINK(1)\n" +
		"rv-1,2,grant,user:alice,\"two\nlines\",\r\n" +
		"rv-1,3,membership,user:bob,é ü,"
	f := setupAccess(t, map[string]string{report: body})
	r := runCLI("", "review", "report", "rv-1", "--format", "csv")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != body {
		t.Errorf("stdout\n%q\nwant the server's CSV byte for byte\n%q", r.stdout, body)
	}
	if r.stderr != "" {
		t.Errorf("stderr %q, want nothing", r.stderr)
	}
	if calls := f.called(report); len(calls) != 1 || calls[0].query != "format=csv" {
		t.Errorf("calls %+v, want one with format=csv", calls)
	}
	if r := runCLI("", "review", "report", "rv-2", "--format", "csv"); r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "no such endpoint") {
		t.Errorf("unknown campaign: exit %d, stdout %q, stderr %q; want 1 with the server's error", r.code, r.stdout, r.stderr)
	}
}

func TestFormatCSVOnlyForReviewReport(t *testing.T) {
	f := setupAccess(t, map[string]string{
		"GET /v1/reviews":             `{"reviews":[]}`,
		"GET /v1/reviews/rv-1":        campaignJSON,
		"GET /v1/reviews/rv-1/report": "a,b\n",
		"GET /v1/requests":            `{"requests":[]}`,
		"GET /v1/incidents":           `{"incidents":[]}`,
		"GET /v1/grants":              `{"grants":[]}`,
	})
	for _, args := range [][]string{
		{"review", "ls"},
		{"review", "show", "rv-1"},
		{"review", "start", "--scope", "role", "--period", "7d"},
		{"request", "ls"},
		{"incident", "ls"},
		{"grant", "ls"},
		{"role", "ls"},
	} {
		r := runCLI("", append(args, "--format", "csv")...)
		if r.code != 2 || !strings.Contains(r.stderr, "table, json or jsonl") {
			t.Errorf("warder %s --format csv: exit %d, stderr %q; want 2", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if r := runCLI("", "review", "report", "rv-1", "--format", "xml"); r.code != 2 || !strings.Contains(r.stderr, "or csv") {
		t.Errorf("review report --format xml: exit %d, stderr %q; want 2", r.code, r.stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, calls := range f.calls {
		t.Errorf("%s reached the server: %+v", key, calls)
	}
}

func TestReviewDecide(t *testing.T) {
	const decide = "POST /v1/reviews/rv-1/items/2/decide"
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantBody map[string]any
	}{
		{"revoke", []string{"revoke", "--comment", "left the team"}, 0, map[string]any{"decision": "revoke", "comment": "left the team"}},
		{"keep", []string{"keep"}, 0, map[string]any{"decision": "keep"}},
		{"unknown decision", []string{"maybe"}, 2, nil},
		{"upper case", []string{"KEEP"}, 2, nil},
		{"no decision", nil, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setupAccess(t, map[string]string{decide: itemJSON})
			r := runCLI("", append([]string{"review", "decide", "rv-1", "2"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.wantCode, r.stderr)
			}
			calls := f.called(decide)
			if tc.wantBody == nil {
				if len(calls) != 0 {
					t.Errorf("calls %+v, want none", calls)
				}
				return
			}
			if len(calls) != 1 || !reflect.DeepEqual(calls[0].body, tc.wantBody) {
				t.Errorf("calls %+v, want one with body %v", calls, tc.wantBody)
			}
			if !strings.Contains(r.stdout, "revoke by user:carol") {
				t.Errorf("stdout %q: want the decided item", r.stdout)
			}
		})
	}
}

func TestIncidents(t *testing.T) {
	const review = "POST /v1/incidents/in-1/review"
	reviewed := strings.Replace(incidentJSON, `"status":"open"`,
		`"status":"reviewed","reviewed_at":"2030-01-02T00:00:00Z","reviewer":"user:bob","notes":"restarted replica"`, 1)
	f := setupAccess(t, map[string]string{"GET /v1/incidents": `{"incidents":[` + incidentJSON + `]}`, review: reviewed})
	r := runCLI("", "incident", "ls", "--open")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ID ROLE PRINCIPAL STATUS OPENED REVIEWER" ||
		!strings.Contains(lines[1], "in-1") || !strings.Contains(lines[1], "user:alice") || !strings.HasSuffix(lines[1], "-") {
		t.Errorf("incident ls: exit %d, stdout %q", r.code, r.stdout)
	}
	if calls := f.called("GET /v1/incidents"); len(calls) != 1 || calls[0].query != "open=1" {
		t.Errorf("incident ls calls %+v", calls)
	}
	for _, args := range [][]string{
		{"incident", "review", "in-1"},
		{"incident", "review", "in-1", "--notes", " \n"},
		{"incident", "review", "--notes", "x"},
	} {
		if r := runCLI("", args...); r.code != 2 {
			t.Errorf("warder %s: exit %d, stderr %q; want 2", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if calls := f.called(review); len(calls) != 0 {
		t.Errorf("review without notes reached the server: %+v", calls)
	}
	r = runCLI("", "incident", "review", "in-1", "--notes", "restarted replica")
	if r.code != 0 || !strings.Contains(r.stdout, "user:bob") || !strings.Contains(r.stdout, "restarted replica") {
		t.Errorf("incident review: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if calls := f.called(review); len(calls) != 1 || !reflect.DeepEqual(calls[0].body, map[string]any{"notes": "restarted replica"}) {
		t.Errorf("review calls %+v", calls)
	}
}

func TestRequestCreateEmergency(t *testing.T) {
	const create = "POST /v1/requests"
	want := map[string]any{"role": "prod-root", "ttl": "1h0m0s", "reason": "db down", "emergency": true}
	t.Run("table", func(t *testing.T) {
		f := setupAccess(t, map[string]string{create: emergencyRequest})
		r := runCLI("", "request", "create", "--role", "prod-root", "--ttl", "1h", "--reason", "db down", "--emergency")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if calls := f.called(create); len(calls) != 1 || !reflect.DeepEqual(calls[0].body, want) {
			t.Errorf("calls %+v, want one with body %v", calls, want)
		}
		if !strings.Contains(r.stderr, "EMERGENCY") || !strings.Contains(r.stderr, "post-incident review") ||
			!strings.Contains(r.stderr, "approver") {
			t.Errorf("stderr %q: want a loud note on the review and the alerted approvers", r.stderr)
		}
		if !strings.Contains(r.stdout, "Emergency") {
			t.Errorf("stdout %q: want the request marked as an emergency", r.stdout)
		}
	})
	t.Run("json", func(t *testing.T) {
		f := setupAccess(t, map[string]string{create: emergencyRequest})
		r := runCLI("", "request", "create", "--role", "prod-root", "--ttl", "1h", "--reason", "db down", "--emergency", "--format", "json")
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil || got["emergency"] != true {
			t.Errorf("exit %d, stdout %q (%v)", r.code, r.stdout, err)
		}
		if r.stderr != "" {
			t.Errorf("stderr %q, want nothing with --format json", r.stderr)
		}
		if calls := f.called(create); len(calls) != 1 || !reflect.DeepEqual(calls[0].body, want) {
			t.Errorf("calls %+v, want one with body %v", calls, want)
		}
	})
	t.Run("not an emergency", func(t *testing.T) {
		f := setupAccess(t, map[string]string{create: pendingRequest})
		r := runCLI("", "request", "create", "--role", "prod-dba", "--ttl", "2h", "--reason", "x")
		if calls := f.called(create); len(calls) != 1 || calls[0].body["emergency"] != nil {
			t.Errorf("calls %+v, want no emergency field", calls)
		}
		if strings.Contains(r.stderr, "EMERGENCY") {
			t.Errorf("stderr %q: emergency note on an ordinary request", r.stderr)
		}
	})
}
