package api

import "net/http"

// userResetMFA answers DELETE /v1/users/{name}/mfa, an administrator's
// reset of a user who lost their authenticator: it removes the user's TOTP
// enrollment (pending or confirmed) and recovery codes, so that they log
// in with their password alone until they enroll again. Identity audits it
// ("identity.totp.disable"); a user without an enrollment is 404.
func (s *Server) userResetMFA(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Identity.DisableTOTP(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
