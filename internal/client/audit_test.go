package client

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestAuditExportIncomplete(t *testing.T) {
	lines := strings.Repeat(`{"seq":1}`+"\n", 3)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr bool
	}{
		{"complete", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", exportTrailer)
			io.WriteString(w, lines)
			w.Header().Set(exportTrailer, "3")
		}, false},
		{"empty", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", exportTrailer)
			w.Header().Set(exportTrailer, "0")
		}, false},
		{"no trailer", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, lines)
		}, true},
		{"trailer for more lines", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", exportTrailer)
			io.WriteString(w, lines)
			w.Header().Set(exportTrailer, "4")
		}, true},
		{"no final newline", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", exportTrailer)
			io.WriteString(w, lines+`{"seq":1}`)
			w.Header().Set(exportTrailer, "3")
		}, true},
		{"connection cut", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", exportTrailer)
			io.WriteString(w, strings.Repeat(lines, 1000))
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			conn.Close()
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testServer(t, tt.handler)
			var out strings.Builder
			err := c.AuditExport(t.Context(), &out, AuditFilter{})
			if tt.wantErr && !errors.Is(err, ErrExportIncomplete) {
				t.Errorf("AuditExport: %v, want ErrExportIncomplete", err)
			}
			if !tt.wantErr && err != nil {
				t.Errorf("AuditExport: %v", err)
			}
		})
	}
}

func TestAuditListQuery(t *testing.T) {
	var got string
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.RawQuery
		io.WriteString(w, `{"events":[{"seq":7},{"seq":6}],"more":true}`)
	})
	page, err := c.AuditList(t.Context(), AuditFilter{Actor: "user:alice", Before: 8, Desc: true, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := "actor=user%3Aalice&before=8&limit=2&order=desc"; got != want {
		t.Errorf("query %q, want %q", got, want)
	}
	if len(page.Events) != 2 || page.Events[0].Seq != 7 || !page.More {
		t.Errorf("page = %+v", page)
	}
}
