package api

import (
	"net/http"
	"net/netip"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
)

// SystemResource is the resource of every administrative decision.
var SystemResource = authz.UID{Type: "System", ID: "warder"}

// authenticated refuses the request when the server is sealed or no valid
// token is presented. The decision is audited first; when the event cannot
// be written the request is refused.
func (s *Server) authenticated(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		if err := s.authenticate(r, c, true); err != nil {
			return err
		}
		return h(w, r, c)
	}
}

// resourceAuthenticated authenticates; the handler or the domain then asks
// the policy engine about the resource the route names, and that decision
// is audited (so an acceptance here is not).
func (s *Server) resourceAuthenticated(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		if err := s.authenticate(r, c, false); err != nil {
			return err
		}
		return h(w, r, c)
	}
}

// authorized is authenticated, then asks the policy engine whether the
// caller may do action on System::"warder". The policy engine audits its
// decision with the deciding policies.
func (s *Server) authorized(action string, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		if err := s.authenticate(r, c, false); err != nil {
			return err
		}
		d, err := s.cfg.Authz.Authorize(r.Context(), c.origin(), authz.Request{
			Principal: principalUID(c.token.Principal),
			Action:    action,
			Resource:  SystemResource,
			Context:   c.authzContext(),
			Details:   map[string]string{"route": c.route},
		})
		if err != nil {
			return err
		}
		if !d.Allow {
			return errkind.New(errkind.Denied, "api: %s is not allowed to %s (no policy permits it)", c.token.Principal.Actor(), action)
		}
		return h(w, r, c)
	}
}

// authenticate checks the bearer token and stores it in c. A scoped token
// (a database token) is refused like an invalid one. A refusal is always
// audited; an acceptance only when auditAllow is set (an
// authorization decision that follows records the caller anyway).
func (s *Server) authenticate(r *http.Request, c *call, auditAllow bool) error {
	if s.cfg.Barrier.Sealed() {
		return errkind.New(errkind.Sealed, "api: sealed")
	}
	presented, ok := bearer(r)
	var (
		tok identity.Token
		err error
	)
	if !ok {
		err = errkind.New(errkind.Unauthenticated, "api: missing token: send it as \"Authorization: Bearer <token>\" (WARDER_TOKEN or `warder login` for the CLI)")
	} else {
		tok, err = s.cfg.Identity.Authenticate(r.Context(), presented)
	}
	if err != nil && errkind.Of(err) != errkind.Unauthenticated {
		return err // the store failed: not a decision
	}
	scoped := err == nil && tok.Scope != ""
	if scoped {
		// A database token is a password for the gateway: leaked, it
		// must not drive the API.
		err = errkind.New(errkind.Unauthenticated, "api: this token is scoped to the database gateway and cannot call the API; use your login token")
	}
	if err == nil && !auditAllow {
		c.token = tok
		return nil
	}
	ev := audit.Event{Actor: "anonymous", Action: "auth.request", Resource: c.route,
		Outcome: audit.OutcomeAllow, Source: c.source, RequestID: c.requestID,
		Details: map[string]string{"path": safePath(r.URL.Path)}}
	if err == nil {
		ev.Actor = tok.Actor()
	} else {
		ev.Outcome = audit.OutcomeDeny
		ev.Details["reason"] = "invalid or missing token"
		if scoped {
			ev.Actor = tok.Actor()
			ev.Details["reason"] = "scoped token"
			ev.Details["token"] = tok.ID
		}
	}
	if _, aerr := s.cfg.Audit.Append(r.Context(), ev); aerr != nil {
		s.cfg.Logger.Error("audit append failed; refusing request", "request_id", c.requestID, "err", aerr)
		return errkind.New(errkind.Unavailable, "api: audit log unavailable; request refused")
	}
	if err != nil {
		return err
	}
	c.token = tok
	return nil
}

// principalUID names an identity principal as a Cedar entity.
func principalUID(p identity.Principal) authz.UID {
	if p.Kind == identity.KindMachine {
		return authz.UID{Type: "Machine", ID: p.Name}
	}
	return authz.UID{Type: "User", ID: p.Name}
}

// authzContext is the Cedar context of an API request.
func (c *call) authzContext() authz.Context {
	ip, _ := netip.ParseAddr(c.source)
	return authz.Context{MFA: c.token.MFA, MFAAt: c.token.MFAAt, SourceIP: ip, Via: "api"}
}
