package api

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
)

// AuditListResponse answers GET /v1/audit/events.
type AuditListResponse struct {
	Events []audit.Event `json:"events"`
	// More is true when further events match beyond this page, in the
	// order asked for.
	More bool `json:"more"`
}

// filter reads actor, action, since, until (RFC 3339), after and before
// (seq), order (asc or desc) and limit from the query string.
func filter(r *http.Request) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action")}
	var err error
	if f.Since, err = parseTime(q.Get("since"), "since"); err != nil {
		return f, err
	}
	if f.Until, err = parseTime(q.Get("until"), "until"); err != nil {
		return f, err
	}
	if f.AfterSeq, err = parseSeq(q.Get("after"), "after"); err != nil {
		return f, err
	}
	if f.BeforeSeq, err = parseSeq(q.Get("before"), "before"); err != nil {
		return f, err
	}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		f.Desc = true
	default:
		return f, errkind.New(errkind.Invalid, "api: order must be asc or desc")
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return f, errkind.New(errkind.Invalid, "api: limit must be 1..1000")
		}
	}
	return f, nil
}

func parseSeq(v, name string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, errkind.New(errkind.Invalid, "api: %s must be a non-negative event number", name)
	}
	return n, nil
}

func parseTime(v, name string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errkind.New(errkind.Invalid, "api: %s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", name)
	}
	return t, nil
}

func (s *Server) auditList(w http.ResponseWriter, r *http.Request, c *call) error {
	f, err := filter(r)
	if err != nil {
		return err
	}
	evs, more, err := s.cfg.Audit.Page(r.Context(), f)
	if err != nil {
		return err
	}
	if evs == nil {
		evs = []audit.Event{}
	}
	return writeJSON(w, AuditListResponse{Events: evs, More: more})
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request, c *call) error {
	pub, err := s.cfg.Barrier.PublicKey(r.Context(), audit.CheckpointPurpose)
	if err != nil {
		return err
	}
	rep, err := s.cfg.Audit.Verify(r.Context(), pub)
	if err != nil {
		return err
	}
	return writeJSON(w, rep)
}

// ExportTrailer is the HTTP trailer that ends a complete export: the number
// of lines (events) sent. An export that fails after it began is cut off
// without it (and on HTTP/1.1 the connection is closed mid-stream), so a
// client that finds the trailer missing, or not matching the lines it
// read, knows its copy is incomplete.
const ExportTrailer = "Warder-Export-Events"

func (s *Server) auditExport(w http.ResponseWriter, r *http.Request, c *call) error {
	f, err := filter(r)
	if err != nil {
		return err
	}
	if f.Desc {
		return errkind.New(errkind.Invalid, "api: an export is always in ascending order")
	}
	return s.stream(w, r, c, func(w io.Writer) error { return s.cfg.Audit.Export(r.Context(), w, f) })
}

// stream answers with the JSON Lines that export writes, followed by the
// ExportTrailer. If export fails before writing anything, the error is
// answered as usual; if it fails later, the stream is aborted.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, c *call, export func(io.Writer) error) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Trailer", ExportTrailer)
	lw := &lineWriter{w: w}
	err := export(lw)
	switch {
	case err == nil:
		w.Header().Set(ExportTrailer, strconv.FormatInt(lw.lines, 10))
		return nil
	case lw.n == 0:
		w.Header().Del("Trailer")
		return err
	}
	if r.Context().Err() == nil {
		s.cfg.Logger.Error("audit export failed after it began; aborting the stream",
			"request_id", c.requestID, "lines", lw.lines, "err", err)
	}
	abort(w)
	return nil
}

// abort cuts the response off: on HTTP/1.x it closes the connection, so
// the client's read fails before the final chunk; on HTTP/2 it ends the
// stream without the trailer. (panic(http.ErrAbortHandler) would reset an
// HTTP/2 stream, but instrument recovers every panic.)
func abort(w http.ResponseWriter) {
	if sw, ok := w.(*statusWriter); ok {
		w = sw.ResponseWriter
	}
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
	}
}

// lineWriter counts the bytes and lines written through it.
type lineWriter struct {
	w     io.Writer
	n     int64
	lines int64
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	n, err := lw.w.Write(p)
	lw.n += int64(n)
	lw.lines += int64(bytes.Count(p[:n], []byte{'\n'}))
	return n, err
}
