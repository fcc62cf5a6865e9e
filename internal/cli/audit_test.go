package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAudit serves /v1/audit/events over events 1..n, and /v1/audit/export
// cut off after a few lines.
type fakeAudit struct {
	n       int64
	mu      sync.Mutex // protects queries
	queries []string
}

func (f *fakeAudit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.queries = append(f.queries, r.URL.RawQuery)
	f.mu.Unlock()
	q := r.URL.Query()
	switch r.URL.Path {
	case "/v1/audit/events":
		limit, _ := strconv.ParseInt(q.Get("limit"), 10, 64)
		after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
		before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
		if before == 0 {
			before = f.n + 1
		}
		var evs []map[string]any
		more := false
		add := func(seq int64) bool {
			if int64(len(evs)) == limit {
				more = true
				return false
			}
			evs = append(evs, map[string]any{"seq": seq, "time": time.Unix(1e9+seq, 0).UTC(), "actor": "user:alice", "action": "auth.login", "outcome": "allow"})
			return true
		}
		if q.Get("order") == "desc" {
			for s := before - 1; s > after && add(s); s-- {
			}
		} else {
			for s := after + 1; s < before && add(s); s++ {
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"events": evs, "more": more})
	case "/v1/audit/export":
		w.Header().Set("Trailer", "Warder-Export-Events")
		io.WriteString(w, strings.Repeat(`{"seq":1}`+"\n", 2)) // and no trailer: cut short
	default:
		http.NotFound(w, r)
	}
}

func setupAudit(t *testing.T, n int64) *fakeAudit {
	t.Helper()
	f := &fakeAudit{n: n}
	serveCLI(t, f, "wt1.admin")
	return f
}

func TestAuditList(t *testing.T) {
	seqCol := func(table string) string {
		var s []string
		for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
			s = append(s, strings.Fields(line)[0])
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		name       string
		n          int64
		args       []string
		wantQuery  string
		wantSeqs   string
		wantStderr string
	}{
		{"newest by default", 250, nil, "limit=100&order=desc", "151..250", "(showing the last 100 matching events; use --before 151 for older ones, or --after/--limit to page)\n"},
		{"everything fits", 3, nil, "limit=100&order=desc", "1,2,3", ""},
		{"page backwards", 250, []string{"--before", "151", "--limit", "2"}, "before=151&limit=2&order=desc", "149,150", "(showing the last 2 matching events; use --before 149 for older ones, or --after/--limit to page)\n"},
		{"from the start", 250, []string{"--after", "0", "--limit", "3"}, "limit=3", "1,2,3", "(showing 3 matching events; use --after 3 for the next ones)\n"},
		{"page forwards", 250, []string{"--after", "248"}, "after=248&limit=100", "249,250", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setupAudit(t, tt.n)
			o := runCLI("", append([]string{"audit", "ls"}, tt.args...)...)
			if o.code != 0 {
				t.Fatalf("exit %d: %s", o.code, o.stderr)
			}
			want := tt.wantSeqs
			if a, b, ok := strings.Cut(want, ".."); ok {
				lo, _ := strconv.Atoi(a)
				hi, _ := strconv.Atoi(b)
				var s []string
				for i := lo; i <= hi; i++ {
					s = append(s, strconv.Itoa(i))
				}
				want = strings.Join(s, ",")
			}
			if got := seqCol(o.stdout); got != want {
				t.Errorf("listed seqs %s, want %s", got, want)
			}
			if o.stderr != tt.wantStderr {
				t.Errorf("stderr %q, want %q", o.stderr, tt.wantStderr)
			}
			if len(f.queries) != 1 || f.queries[0] != tt.wantQuery {
				t.Errorf("queries %q, want %q", f.queries, tt.wantQuery)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		setupAudit(t, 250)
		o := runCLI("", "audit", "ls", "--limit", "3", "--format", "json")
		var evs []struct{ Seq int64 }
		if err := json.Unmarshal([]byte(o.stdout), &evs); err != nil || o.code != 0 || o.stderr != "" {
			t.Fatalf("exit %d, stdout %q (%v), stderr %q", o.code, o.stdout, err, o.stderr)
		}
		if got := fmt.Sprint(evs); got != "[{248} {249} {250}]" {
			t.Errorf("events %s, want 248..250 in ascending order", got)
		}
	})
}

func TestAuditExportCut(t *testing.T) {
	setupAudit(t, 10)
	o := runCLI("", "audit", "export", "--format", "jsonl")
	if o.code == 0 || !strings.Contains(o.stderr, "incomplete") {
		t.Errorf("a cut export: exit %d, stderr %q; want a failure naming the export incomplete", o.code, o.stderr)
	}
}
