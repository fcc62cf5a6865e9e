package api

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warderhq/warder/internal/errkind"
)

// TestExportStreamFailure injects failures into an export handler, before
// and after the stream has begun, over HTTP/1.1 and HTTP/2, and checks a
// client can always tell a complete export from a cut one.
func TestExportStreamFailure(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{Logger: slog.New(slog.DiscardHandler)}, metrics: m}
	lines := strings.Repeat(`{"seq":1}`+"\n", 3)
	many := strings.Repeat(lines, 1000)
	exports := map[string]func(io.Writer) error{
		"complete": func(w io.Writer) error {
			_, err := io.WriteString(w, lines)
			return err
		},
		"fails before writing": func(w io.Writer) error {
			return errkind.New(errkind.Unavailable, "audit: too many exports running")
		},
		"fails after a line": func(w io.Writer) error {
			io.WriteString(w, many) // more than the response buffers, so that some is sent
			return errors.New("audit: query events: database is gone")
		},
		"fails mid-line": func(w io.Writer) error {
			io.WriteString(w, many+lines[:4])
			return errors.New("audit: query events: database is gone")
		},
	}
	handler := s.instrument("GET /v1/audit/export", func(w http.ResponseWriter, r *http.Request, c *call) error {
		return s.stream(w, r, c, exports[r.URL.Query().Get("case")])
	})
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(handler)
			srv.EnableHTTP2 = proto == "HTTP/2.0"
			srv.StartTLS()
			defer srv.Close()
			get := func(name string) (resp *http.Response, body string, readErr error) {
				t.Helper()
				resp, err := srv.Client().Get(srv.URL + "/?case=" + strings.ReplaceAll(name, " ", "+"))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.Proto != proto {
					t.Fatalf("served over %s, want %s", resp.Proto, proto)
				}
				b, readErr := io.ReadAll(resp.Body)
				return resp, string(b), readErr
			}

			resp, body, err := get("complete")
			if err != nil || resp.StatusCode != 200 || body != lines || resp.Trailer.Get(ExportTrailer) != "3" {
				t.Errorf("complete: %d %q, read error %v, trailer %q; want 200, 3 lines, trailer 3", resp.StatusCode, body, err, resp.Trailer.Get(ExportTrailer))
			}

			resp, body, err = get("fails before writing")
			if err != nil || resp.StatusCode != 503 || !strings.Contains(body, "too many exports") || resp.Header.Get("Trailer") != "" {
				t.Errorf("fails before writing: %d %q, read error %v, Trailer header %q; want a 503 error answer", resp.StatusCode, body, err, resp.Header.Get("Trailer"))
			}

			for _, name := range []string{"fails after a line", "fails mid-line"} {
				resp, body, err = get(name)
				if resp.Trailer.Get(ExportTrailer) != "" {
					t.Errorf("%s: trailer %q sent with a cut export", name, resp.Trailer.Get(ExportTrailer))
				}
				if proto == "HTTP/1.1" && err == nil {
					t.Errorf("%s: the client read %d bytes to a clean end; want the connection cut", name, len(body))
				}
			}
		})
	}
}
