package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
)

// AuditListResponse answers GET /v1/audit/events.
type AuditListResponse struct {
	Events []audit.Event `json:"events"`
}

// filter reads actor, action, since, until (RFC 3339), after (seq) and
// limit from the query string.
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
	if v := q.Get("after"); v != "" {
		if f.AfterSeq, err = strconv.ParseInt(v, 10, 64); err != nil || f.AfterSeq < 0 {
			return f, errkind.New(errkind.Invalid, "api: after must be a non-negative event number")
		}
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return f, errkind.New(errkind.Invalid, "api: limit must be 1..1000")
		}
	}
	return f, nil
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
	evs, err := s.cfg.Audit.List(r.Context(), f)
	if err != nil {
		return err
	}
	if evs == nil {
		evs = []audit.Event{}
	}
	return writeJSON(w, AuditListResponse{Events: evs})
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

func (s *Server) auditExport(w http.ResponseWriter, r *http.Request, c *call) error {
	f, err := filter(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	// Once streaming has begun an error can only cut the stream short; the
	// client notices the missing final newline or a failed JSON line.
	return s.cfg.Audit.Export(r.Context(), w, f)
}
