// Package api serves Warder's JSON API under /v1/ and its metrics.
//
// Handlers are thin: they decode a request, call a domain package and encode
// the answer. Errors are mapped from their errkind to an HTTP status here and
// nowhere else; the body is always {"error":{"code":"...","message":"..."}}.
// An internal error is logged with its request id and shown to the client
// only as "internal error" with that id.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/operator"
	"github.com/warderhq/warder/internal/recording"
	"github.com/warderhq/warder/internal/rotation"
	"github.com/warderhq/warder/internal/vault"
)

// Config wires the API to the domain. All pointer fields are required.
type Config struct {
	Operator *operator.Operator
	Barrier  *barrier.Barrier
	Audit    *audit.Log
	Identity *identity.Directory
	Authz    *authz.Authorizer
	Vault    *vault.Vault
	Rotation *rotation.Engine
	Access   *access.Access
	Recorder *recording.Recorder
	Logger   *slog.Logger
	// Registry receives the API's metrics and is served on /metrics.
	Registry *prometheus.Registry
	// MaxRequestBytes bounds every request body; 0 means 1 MiB.
	MaxRequestBytes int64
	// Version is reported by /v1/sys/health.
	Version string
	// ExposeUnsealKey lets /v1/sys/init return the unseal key file contents
	// when asked (for `operator init --key-file`). Always true today; a
	// field so that a hardened build can turn it off.
	ExposeUnsealKey bool
	// SSHListen, if set, returns the SSH gateway's address for
	// /v1/sys/ssh ("" when it does not run). Nil: no gateway.
	SSHListen func() string
	// DBListen, if set, returns the database gateway's address for
	// /v1/sys/db and database tokens ("" when it does not run). Nil: no
	// gateway.
	DBListen func() string
}

// Server is the API's http.Handler.
type Server struct {
	cfg       Config
	mux       *http.ServeMux
	metrics   *metrics
	routeList []Route
}

// New builds the handler.
func New(cfg Config) (*Server, error) {
	if cfg.Operator == nil || cfg.Barrier == nil || cfg.Audit == nil || cfg.Identity == nil || cfg.Authz == nil || cfg.Vault == nil || cfg.Rotation == nil || cfg.Access == nil || cfg.Recorder == nil || cfg.Registry == nil {
		return nil, errors.New("api: incomplete configuration")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 1 << 20
	}
	m, err := newMetrics(cfg.Registry, cfg.Barrier)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), metrics: m}
	s.routes()
	return s, nil
}

// Access says what a route requires.
type Access struct {
	// Open routes need no token and work sealed.
	Open bool
	// Action, when set, is the Cedar action the caller must be allowed on
	// System::"warder". Otherwise any valid token will do (the route acts on
	// the caller itself, or names a resource; see Resource).
	Action string
	// Resource, when set, is the Cedar action the caller must be allowed on
	// the resource the route names (an account, a secret). The route
	// authenticates; the domain (or handler) decides and audits the
	// decision with the resource.
	Resource string
}

// Route is one registered endpoint.
type Route struct {
	Pattern string
	Access  Access
}

// Routes lists every endpoint with what it requires, so that a test can
// check that none is left open by accident.
func (s *Server) Routes() []Route { return s.routeList }

var (
	open          = Access{Open: true}
	authenticated = Access{}
	adminOnly     = Access{Action: "admin"}
	auditRead     = Access{Action: "audit_read"}
)

func (s *Server) routes() {
	r := func(pattern string, a Access, h handlerFunc) {
		s.routeList = append(s.routeList, Route{Pattern: pattern, Access: a})
		switch {
		case a.Open:
		case a.Resource != "":
			h = s.resourceAuthenticated(h)
		case a.Action == "":
			h = s.authenticated(h)
		default:
			h = s.authorized(a.Action, h)
		}
		s.handle(pattern, h)
	}
	r("GET /v1/sys/health", open, s.health)
	r("GET /v1/sys/seal-status", open, s.sealStatus)
	r("POST /v1/sys/init", open, s.initialize)
	r("POST /v1/sys/unseal", open, s.unseal)
	r("POST /v1/sys/seal", adminOnly, s.seal)
	r("POST /v1/sys/rotate-key", adminOnly, s.rotateKey)

	r("GET /v1/audit/events", auditRead, s.auditList)
	r("GET /v1/audit/verify", auditRead, s.auditVerify)
	r("GET /v1/audit/export", auditRead, s.auditExport)

	r("POST /v1/auth/login", open, s.login)
	r("POST /v1/auth/machine/login", open, s.machineLogin)
	r("GET /v1/auth/token/self", authenticated, s.tokenSelf)
	r("POST /v1/auth/token/renew", authenticated, s.tokenRenew)
	r("POST /v1/auth/token/revoke-self", authenticated, s.tokenRevokeSelf)
	r("POST /v1/auth/mfa/totp/enroll", authenticated, s.totpEnroll)
	r("POST /v1/auth/mfa/totp/confirm", authenticated, s.totpConfirm)
	r("POST /v1/auth/ssh/certificate", authenticated, s.sshCertificate)
	r("GET /v1/sys/ssh", open, s.sshInfo)
	r("POST /v1/auth/db/certificate", authenticated, s.dbCertificate)
	r("GET /v1/sys/db", open, s.dbInfo)
	r("POST /v1/db/token", authenticated, s.dbToken)

	r("POST /v1/users", adminOnly, s.userCreate)
	r("GET /v1/users", adminOnly, s.userList)
	r("GET /v1/users/{name}", adminOnly, s.userShow)
	r("POST /v1/users/{name}/disable", adminOnly, s.userDisable)
	r("POST /v1/users/{name}/enable", adminOnly, s.userEnable)
	r("DELETE /v1/users/{name}", adminOnly, s.userDelete)
	r("DELETE /v1/users/{name}/mfa", adminOnly, s.userResetMFA)
	r("POST /v1/users/{name}/unlock", adminOnly, s.userUnlock)
	r("POST /v1/users/{name}/password", adminOnly, s.userSetPassword)

	r("POST /v1/groups", adminOnly, s.groupCreate)
	r("GET /v1/groups", adminOnly, s.groupList)
	r("GET /v1/groups/{name}", adminOnly, s.groupShow)
	r("POST /v1/groups/{name}/members", adminOnly, s.groupAddMember)
	r("DELETE /v1/groups/{name}/members/{kind}/{member}", adminOnly, s.groupRemoveMember)

	r("POST /v1/machines", adminOnly, s.machineCreate)
	r("GET /v1/machines", adminOnly, s.machineList)
	r("GET /v1/machines/{name}", adminOnly, s.machineShow)
	r("POST /v1/machines/{name}/disable", adminOnly, s.machineDisable)
	r("POST /v1/machines/{name}/enable", adminOnly, s.machineEnable)
	r("DELETE /v1/machines/{name}", adminOnly, s.machineDelete)
	r("POST /v1/machines/{name}/secret-ids", adminOnly, s.machineIssueSecret)
	r("GET /v1/machines/{name}/secret-ids", adminOnly, s.machineSecretIDs)
	r("DELETE /v1/machines/{name}/secret-ids/{accessor}", adminOnly, s.machineRevokeSecret)
	r("DELETE /v1/machines/{name}/secret-ids", adminOnly, s.machineRevokeSecrets)

	r("POST /v1/targets", adminOnly, s.targetAdd)
	r("GET /v1/targets", adminOnly, s.targetList)
	r("GET /v1/targets/{name}", adminOnly, s.targetShow)
	r("DELETE /v1/targets/{name}", adminOnly, s.targetRemove)
	r("POST /v1/targets/{name}/rotate", adminOnly, s.targetRotate)
	r("PUT /v1/targets/{name}/rules", adminOnly, s.targetRules)
	r("POST /v1/accounts", adminOnly, s.accountAdd)
	r("GET /v1/accounts", adminOnly, s.accountList)
	r("GET /v1/accounts/{target}/{user}", adminOnly, s.accountShow)
	r("DELETE /v1/accounts/{target}/{user}", adminOnly, s.accountRemove)
	r("GET /v1/accounts/{target}/{user}/versions", adminOnly, s.accountVersions)
	r("POST /v1/accounts/{target}/{user}/verify", adminOnly, s.accountVerify)
	r("POST /v1/accounts/{target}/{user}/rotate", Access{Resource: "rotate"}, s.accountRotate)
	r("POST /v1/accounts/{target}/{user}/checkout", Access{Resource: "checkout"}, s.checkout)
	r("POST /v1/accounts/{target}/{user}/checkin", authenticated, s.checkin)
	r("GET /v1/leases", authenticated, s.leaseList)
	r("POST /v1/leases/{id}/extend", authenticated, s.leaseExtend)
	r("POST /v1/leases/{id}/force-checkin", adminOnly, s.leaseForceCheckin)
	r("PUT /v1/secrets/{path...}", adminOnly, s.secretPut)
	r("GET /v1/secrets/{path...}", Access{Resource: "read_secret"}, s.secretGet)
	r("GET /v1/secrets", adminOnly, s.secretList)

	r("POST /v1/roles", adminOnly, s.roleCreate)
	r("GET /v1/roles", authenticated, s.roleList)
	r("GET /v1/roles/{name}", authenticated, s.roleShow)
	r("DELETE /v1/roles/{name}", adminOnly, s.roleDelete)
	r("POST /v1/roles/{name}/eligibility", adminOnly, s.eligibilitySet)
	r("GET /v1/roles/{name}/eligibility", adminOnly, s.eligibilityList)
	r("DELETE /v1/roles/{name}/eligibility/{kind}/{subject}", adminOnly, s.eligibilityRemove)
	r("POST /v1/requests", authenticated, s.requestCreate)
	r("GET /v1/requests", authenticated, s.requestList)
	r("GET /v1/requests/{id}", authenticated, s.requestShow)
	r("POST /v1/requests/{id}/approve", authenticated, s.requestApprove)
	r("POST /v1/requests/{id}/deny", authenticated, s.requestDeny)
	r("POST /v1/requests/{id}/cancel", authenticated, s.requestCancel)
	r("GET /v1/grants", authenticated, s.grantList)
	r("POST /v1/grants/{id}/extend", authenticated, s.grantExtend)
	r("POST /v1/grants/{id}/revoke", adminOnly, s.grantRevoke)
	r("GET /v1/grants/{id}/credential", authenticated, s.grantCredential)

	r("GET /v1/incidents", authenticated, s.incidentList)
	r("POST /v1/incidents/{id}/review", authenticated, s.incidentReview)
	r("POST /v1/reviews", adminOnly, s.reviewStart)
	r("GET /v1/reviews", authenticated, s.reviewList)
	r("GET /v1/reviews/{id}", authenticated, s.reviewShow)
	r("POST /v1/reviews/{id}/items/{item}/decide", authenticated, s.reviewDecide)
	r("GET /v1/reviews/{id}/report", authenticated, s.reviewReport)

	r("GET /v1/sessions", auditRead, s.sessionList)
	r("GET /v1/sessions/{id}", auditRead, s.sessionShow)
	r("GET /v1/sessions/{id}/recording", auditRead, s.sessionRecording)
	r("GET /v1/sessions/{id}/live", auditRead, s.sessionLive)
	r("POST /v1/sessions/{id}/kill", adminOnly, s.sessionKill)

	r("PUT /v1/policies/{name}", adminOnly, s.policyPut)
	r("GET /v1/policies", adminOnly, s.policyList)
	r("GET /v1/policies/{name}", adminOnly, s.policyShow)
	r("DELETE /v1/policies/{name}", adminOnly, s.policyDelete)
	r("POST /v1/policies/check", adminOnly, s.policyCheck)

	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	s.handle("/", func(w http.ResponseWriter, r *http.Request, c *call) error {
		return errkind.New(errkind.NotFound, "api: no such endpoint: %s %s", r.Method, r.URL.Path)
	})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// handlerFunc is an API handler: it returns an error instead of writing one.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c *call) error

// call carries what the middleware learned about a request.
type call struct {
	requestID string
	source    string
	route     string         // the matched route pattern, e.g. "GET /v1/users/{name}"
	token     identity.Token // zero on open routes
}

func (c *call) origin() operator.Origin {
	o := operator.Origin{Source: c.source, RequestID: c.requestID}
	if c.token.ID != "" {
		o.Actor = c.token.Actor()
	}
	return o
}

func (s *Server) handle(pattern string, h handlerFunc) {
	s.mux.Handle(pattern, s.instrument(pattern, h))
}

// writeJSON writes v with status 200.
func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

// errEmptyBody is decode's error for a request without a body.
var errEmptyBody = errkind.New(errkind.Invalid, "api: request body is empty; expected a JSON object")

// decode reads exactly one JSON object of type T from the body, refusing
// unknown fields, trailing data and bodies over the limit.
func decode[T any](r *http.Request) (T, error) {
	var v T
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return v, errkind.New(errkind.TooLarge, "api: request body larger than %d bytes", tooBig.Limit)
		case errors.Is(err, io.EOF):
			return v, errEmptyBody
		}
		return v, errkind.New(errkind.Invalid, "api: malformed JSON body: %s", jsonReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return v, errkind.New(errkind.TooLarge, "api: request body larger than %d bytes", tooBig.Limit)
		}
		return v, errkind.New(errkind.Invalid, "api: malformed JSON body: unexpected data after the object")
	}
	return v, nil
}

// decodeOptional is decode, except that an empty body is the zero value.
func decodeOptional[T any](r *http.Request) (T, error) {
	v, err := decode[T](r)
	if err != nil && errors.Is(err, errEmptyBody) {
		var zero T
		return zero, nil
	}
	return v, err
}

// jsonReason keeps a decoder error's description without echoing input.
func jsonReason(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s", typ.Field, typ.Type)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "not valid JSON"
}

type errorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id,omitempty"`
	} `json:"error"`
}

// status maps an error kind to its HTTP status.
func status(k errkind.Kind) int {
	switch k {
	case errkind.Invalid:
		return http.StatusBadRequest
	case errkind.NotFound:
		return http.StatusNotFound
	case errkind.Unauthenticated:
		return http.StatusUnauthorized
	case errkind.Denied:
		return http.StatusForbidden
	case errkind.Conflict:
		return http.StatusConflict
	case errkind.Sealed, errkind.Unavailable:
		return http.StatusServiceUnavailable
	case errkind.TooLarge:
		return http.StatusRequestEntityTooLarge
	case errkind.RateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	k := errkind.Of(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	var body errorBody
	body.Error.Code = k.String()
	body.Error.RequestID = w.Header().Get("X-Request-Id")
	if k == errkind.Other {
		s.cfg.Logger.Error("request failed", "request_id", body.Error.RequestID, "method", r.Method, "path", r.URL.Path, "err", err)
		body.Error.Message = "internal error; the server log has details under request id " + body.Error.RequestID
	} else {
		body.Error.Message = err.Error()
	}
	if k == errkind.Sealed {
		body.Error.Message = "warder is sealed: unseal it with `warder operator unseal`"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status(k))
	json.NewEncoder(w).Encode(body)
}
