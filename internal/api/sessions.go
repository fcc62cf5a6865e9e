package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/recording"
)

// SessionList answers GET /v1/sessions.
type SessionList struct {
	Sessions []recording.Info `json:"sessions"`
}

func (s *Server) sessionList(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	f := recording.Filter{Kind: recording.Kind(q.Get("kind")), Principal: q.Get("principal"), Active: q.Get("active") != ""}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errkind.New(errkind.Invalid, "api: limit must be 1..1000")
		}
		f.Limit = n
	}
	ss, err := s.cfg.Recorder.List(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, SessionList{Sessions: nonNil(ss)})
}

// SessionDetail answers GET /v1/sessions/{id}: the session, the command
// lines typed (ssh), and the statements run (db). Each statement is the
// gateway's record ({"sql", "stmt", "params", "tag", "rows",
// "error_code", "duration_ms", "blocked" or "alert"}) with "time", the
// seconds from the session's start to the statement's end.
type SessionDetail struct {
	recording.Info
	Commands   []string          `json:"commands,omitempty"`
	Statements []json.RawMessage `json:"statements,omitempty"`
}

func (s *Server) sessionShow(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	info, err := s.cfg.Recorder.Get(r.Context(), id)
	if err != nil {
		return err
	}
	out := SessionDetail{Info: info}
	var inputs []recording.Event
	var stmt statementJoiner
	err = s.cfg.Recorder.Replay(r.Context(), id, func(ev recording.Event) error {
		switch ev.Type {
		case recording.Input:
			inputs = append(inputs, ev)
		case recording.Statement:
			if st := stmt.add(ev); st != nil {
				out.Statements = append(out.Statements, st)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	out.Commands = recording.Commands(inputs)
	return writeJSON(w, out)
}

// maxStatementBytes bounds one statement record rebuilt from its pieces.
const maxStatementBytes = 16 << 20

// statementJoiner rebuilds the gateway's statement records: the recorder
// splits a long one into several events at the same time, and a record is
// one JSON object. Each complete record is returned with "time" (seconds
// since the session started) added in front.
type statementJoiner struct {
	buf []byte  // pieces of a record not yet complete
	at  float64 // their time
}

func (j *statementJoiner) add(ev recording.Event) json.RawMessage {
	if len(j.buf) > 0 && (ev.Time != j.at || len(j.buf)+len(ev.Data) > maxStatementBytes) {
		j.buf = j.buf[:0] // a torn record: drop it
	}
	if len(j.buf) == 0 {
		j.at = ev.Time
	}
	j.buf = append(j.buf, ev.Data...)
	if len(j.buf) < 2 || j.buf[0] != '{' || !json.Valid(j.buf) {
		if len(j.buf) > 0 && j.buf[0] != '{' {
			j.buf = j.buf[:0] // not a record of ours
		}
		return nil
	}
	rec := make([]byte, 0, len(j.buf)+32)
	rec = append(rec, `{"time":`...)
	rec = strconv.AppendFloat(rec, j.at, 'f', 6, 64)
	if len(j.buf) > 2 && !isEmptyObject(j.buf) {
		rec = append(rec, ',')
	}
	rec = append(rec, j.buf[1:]...)
	j.buf = j.buf[:0]
	return rec
}

// isEmptyObject reports whether b, a valid JSON object, has no member.
func isEmptyObject(b []byte) bool {
	for _, c := range b[1:] {
		switch c {
		case ' ', '\t', '\r', '\n':
		case '}':
			return true
		default:
			return false
		}
	}
	return false
}

// sessionRecording streams the asciicast v2 recording.
func (s *Server) sessionRecording(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := s.cfg.Recorder.Get(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	return s.cfg.Recorder.WriteAsciicast(r.Context(), r.PathValue("id"), w)
}

// sessionLive streams a live session's events as JSON lines
// ([time, type, data]) until it ends or the observer leaves. It works on
// the server process that serves the session.
func (s *Server) sessionLive(w http.ResponseWriter, r *http.Request, c *call) error {
	evs, stop, err := s.cfg.Recorder.Join(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	defer stop()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	for ev := range evs {
		if err := enc.Encode([]any{ev.Time, ev.Type, ev.Data}); err != nil {
			return nil // the observer left
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	return nil
}

// KillRequest is the body of POST /v1/sessions/{id}/kill.
type KillRequest struct {
	Message string `json:"message,omitempty"`
}

func (s *Server) sessionKill(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decodeOptional[KillRequest](r)
	if err != nil {
		return err
	}
	if req.Message == "" {
		req.Message = "your session was terminated by security"
	}
	if err := s.cfg.Recorder.Kill(r.Context(), c.origin(), r.PathValue("id"), req.Message); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
