package api

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/errkind"
)

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// instrument gives every request an id, a size limit, a recover, a log line
// and metrics, then runs h.
func (s *Server) instrument(pattern string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c := &call{requestID: newRequestID(), source: sourceOf(r), route: pattern}
		rw.Header().Set("X-Request-Id", c.requestID)
		rw.Header().Set("Cache-Control", "no-store")
		w := &statusWriter{ResponseWriter: rw}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p) // let net/http reset the stream: a cut export must look cut
				}
				s.cfg.Logger.Error("handler panic", "request_id", c.requestID, "path", r.URL.Path, "panic", p)
				if w.status == 0 {
					s.writeError(w, r, errkind.New(errkind.Other, "api: panic"))
				}
			}
			code := w.status
			if code == 0 {
				code = http.StatusOK
			}
			s.metrics.observe(pattern, code, time.Since(start))
			s.cfg.Logger.Debug("request", "request_id", c.requestID, "method", r.Method, "path", r.URL.Path,
				"status", code, "duration", time.Since(start), "source", c.source)
		}()
		if err := h(w, r, c); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// safePath is the request path as it may appear in an audit event: valid
// UTF-8, no control characters, at most 256 bytes. A path that cannot be
// recorded must not stop its refusal from being recorded.
func safePath(p string) string {
	p = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(p, "?"))
	if len(p) > 256 {
		cut := 256
		for cut > 0 && !utf8.RuneStart(p[cut]) {
			cut--
		}
		p = p[:cut] + "…"
	}
	return p
}

// bearer extracts the token from "Authorization: Bearer <token>".
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

// sourceOf is the client's IP address. Warder does not trust forwarding
// headers: it terminates TLS itself.
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
