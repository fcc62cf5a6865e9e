package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/api"
)

func TestAuditListNewestFirst(t *testing.T) {
	f := newFixture(t)
	token := f.initAndUnseal(t)
	all := f.do(t, "GET", "/v1/audit/events?limit=1000", token, "")
	var asc api.AuditListResponse
	if err := json.Unmarshal([]byte(all.body), &asc); err != nil || all.status != 200 || len(asc.Events) < 4 || asc.More {
		t.Fatalf("all events: %d %s", all.status, all.body)
	}
	r := f.do(t, "GET", "/v1/audit/events?order=desc&limit=2", token, "")
	var desc api.AuditListResponse
	if err := json.Unmarshal([]byte(r.body), &desc); err != nil || r.status != 200 {
		t.Fatalf("order=desc: %d %s", r.status, r.body)
	}
	// Each request is audited, so the newest events are newer than the
	// ones read above.
	if len(desc.Events) != 2 || !desc.More || desc.Events[0].Seq <= asc.Events[len(asc.Events)-1].Seq ||
		desc.Events[1].Seq != desc.Events[0].Seq-1 {
		t.Errorf("order=desc&limit=2: %+v", desc)
	}
	before := strconv.FormatInt(desc.Events[1].Seq, 10)
	r = f.do(t, "GET", "/v1/audit/events?order=desc&limit=1&before="+before, token, "")
	var older api.AuditListResponse
	json.Unmarshal([]byte(r.body), &older)
	if len(older.Events) != 1 || older.Events[0].Seq != desc.Events[1].Seq-1 {
		t.Errorf("before=%s: %s", before, r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/audit/events?order=sideways", token, ""), 400, "invalid")
	wantError(t, f.do(t, "GET", "/v1/audit/events?before=-1", token, ""), 400, "invalid")
	wantError(t, f.do(t, "GET", "/v1/audit/export?order=desc", token, ""), 400, "invalid")
}

func TestAuditExportTrailer(t *testing.T) {
	f := newFixture(t)
	token := f.initAndUnseal(t)
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/audit/export", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("export: %d, %v", resp.StatusCode, err)
	}
	n := strings.Count(string(b), "\n")
	if got := resp.Trailer.Get(api.ExportTrailer); n == 0 || got != strconv.Itoa(n) {
		t.Errorf("export of %d lines ended with trailer %q", n, got)
	}
}
