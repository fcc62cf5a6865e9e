package client

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestReviewReportCSV(t *testing.T) {
	const body = "campaign,item\r\nrv-1,\"a \"\"b\"\"\"\nrv-1,'=1"
	for _, tc := range []struct {
		name        string
		contentType string
		status      int
		answer      string
		wantOut     string
		wantErr     string
	}{
		{"csv", "text/csv; charset=utf-8", 200, body, body, ""},
		{"no content type", "", 200, body, body, ""},
		{"json instead", "application/json", 200, `{"campaign":{}}`, "", "not CSV"},
		{"error", "application/json", 404, `{"error":{"code":"not_found","message":"access: no review rv-1","request_id":"r1"}}`, "", "no review rv-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || r.URL.Path != "/v1/reviews/rv-1/report" || r.URL.RawQuery != "format=csv" {
					http.NotFound(w, r)
					return
				}
				w.Header()["Content-Type"] = []string{tc.contentType}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.answer)
			})
			var out strings.Builder
			err := c.ReviewReportCSV(t.Context(), "rv-1", &out)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if out.String() != tc.wantOut {
				t.Errorf("wrote %q, want %q", out.String(), tc.wantOut)
			}
		})
	}
}

func TestStartReviewBody(t *testing.T) {
	var got []map[string]any
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		json.NewDecoder(r.Body).Decode(&b)
		got = append(got, b)
		io.WriteString(w, `{"id":"rv-1","items":[]}`)
	})
	deadline := time.Date(2030, 1, 31, 17, 0, 0, 0, time.UTC)
	for _, r := range []NewReview{
		{Scope: "role", Period: 168 * time.Hour},
		{Scope: "group", Target: "dba", Deadline: deadline, Default: "keep", Reviewer: "security"},
	} {
		if _, err := c.StartReview(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	want := []map[string]any{
		{"scope": "role", "period": "168h0m0s"},
		{"scope": "group", "target": "dba", "deadline": "2030-01-31T17:00:00Z", "default": "keep", "reviewer": "security"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bodies %v, want %v", got, want)
	}
}
