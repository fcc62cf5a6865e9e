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
// lines typed (ssh), and the statements run (db).
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
	err = s.cfg.Recorder.Replay(r.Context(), id, func(ev recording.Event) error {
		switch ev.Type {
		case recording.Input:
			inputs = append(inputs, ev)
		case recording.Statement:
			if json.Valid([]byte(ev.Data)) {
				out.Statements = append(out.Statements, json.RawMessage(ev.Data))
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
