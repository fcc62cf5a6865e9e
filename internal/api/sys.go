package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/operator"
)

// HealthResponse is the body of GET /v1/sys/health.
type HealthResponse struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Version     string `json:"version"`
}

// health answers 200 when unsealed, 503 when sealed and 501 when not
// initialised, so a load balancer can route on the status alone.
func (s *Server) health(w http.ResponseWriter, r *http.Request, c *call) error {
	st, err := s.cfg.Barrier.Status(r.Context())
	if err != nil {
		return err
	}
	code := http.StatusOK
	switch {
	case !st.Initialized:
		code = http.StatusNotImplemented
	case st.Sealed:
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	return json.NewEncoder(w).Encode(HealthResponse{Initialized: st.Initialized, Sealed: st.Sealed, Version: s.cfg.Version})
}

func (s *Server) sealStatus(w http.ResponseWriter, r *http.Request, c *call) error {
	st, err := s.cfg.Barrier.Status(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, st)
}

// InitRequest is the body of POST /v1/sys/init.
type InitRequest struct {
	Shares    int  `json:"shares"`
	Threshold int  `json:"threshold"`
	KeyFile   bool `json:"key_file"` // also return the unseal key file contents
}

// InitResponse is the body answering POST /v1/sys/init.
type InitResponse struct {
	Shares     []string `json:"shares"`
	AdminToken string   `json:"admin_token"`
	UnsealKey  string   `json:"unseal_key,omitempty"`
}

func (s *Server) initialize(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[InitRequest](r)
	if err != nil {
		return err
	}
	if req.KeyFile && !s.cfg.ExposeUnsealKey {
		return errkind.New(errkind.Denied, "api: this server does not hand out unseal key files")
	}
	res, err := s.cfg.Operator.Init(r.Context(), c.origin(), operator.InitRequest{Shares: req.Shares, Threshold: req.Threshold})
	if err != nil {
		return err
	}
	out := InitResponse{Shares: res.Shares, AdminToken: res.AdminToken}
	if req.KeyFile {
		out.UnsealKey = string(res.UnsealKey)
	}
	return writeJSON(w, out)
}

// UnsealRequest is the body of POST /v1/sys/unseal: one share, or reset.
type UnsealRequest struct {
	Share string `json:"share"`
	Reset bool   `json:"reset"`
}

func (s *Server) unseal(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[UnsealRequest](r)
	if err != nil {
		return err
	}
	if req.Reset {
		if err := s.cfg.Operator.ResetUnseal(r.Context(), c.origin()); err != nil {
			return err
		}
		return s.sealStatus(w, r, c)
	}
	share := strings.TrimSpace(req.Share)
	if share == "" {
		return errkind.New(errkind.Invalid, "api: no share given")
	}
	st, err := s.cfg.Operator.Unseal(r.Context(), c.origin(), share)
	if err != nil {
		return err
	}
	return writeJSON(w, st)
}

func (s *Server) seal(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Operator.Seal(r.Context(), c.origin()); err != nil {
		return err
	}
	return s.sealStatus(w, r, c)
}

// RotateKeyResponse answers POST /v1/sys/rotate-key.
type RotateKeyResponse struct {
	KeyVersion uint32 `json:"key_version"`
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request, c *call) error {
	v, err := s.cfg.Operator.RotateKey(r.Context(), c.origin())
	if err != nil {
		return err
	}
	return writeJSON(w, RotateKeyResponse{KeyVersion: v})
}
