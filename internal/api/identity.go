package api

import (
	"context"
	"net/http"
	"net/netip"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
)

// LoginRequest is the body of POST /v1/auth/login.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	TOTP     string `json:"totp,omitempty"` // a TOTP code or a recovery code
}

// LoginResponse answers a successful login: the token, shown once.
type LoginResponse struct {
	Token     string         `json:"token"`
	TokenInfo identity.Token `json:"token_info"`
}

func (c *call) sourceAddr() netip.Addr {
	ip, _ := netip.ParseAddr(c.source)
	return ip
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, c *call) error {
	if s.cfg.Barrier.Sealed() {
		return errkind.New(errkind.Sealed, "api: sealed")
	}
	req, err := decode[LoginRequest](r)
	if err != nil {
		return err
	}
	tok, info, err := s.cfg.Identity.Login(r.Context(), c.origin(), identity.LoginRequest{
		User: req.User, Password: []byte(req.Password), TOTP: req.TOTP, Source: c.sourceAddr(),
	})
	if err != nil {
		return err
	}
	return writeJSON(w, LoginResponse{Token: tok, TokenInfo: info})
}

// MachineLoginRequest is the body of POST /v1/auth/machine/login.
type MachineLoginRequest struct {
	RoleID   string `json:"role_id"`
	SecretID string `json:"secret_id"`
}

func (s *Server) machineLogin(w http.ResponseWriter, r *http.Request, c *call) error {
	if s.cfg.Barrier.Sealed() {
		return errkind.New(errkind.Sealed, "api: sealed")
	}
	req, err := decode[MachineLoginRequest](r)
	if err != nil {
		return err
	}
	tok, info, err := s.cfg.Identity.LoginMachine(r.Context(), c.origin(), req.RoleID, req.SecretID, c.sourceAddr())
	if err != nil {
		return err
	}
	return writeJSON(w, LoginResponse{Token: tok, TokenInfo: info})
}

func (s *Server) tokenSelf(w http.ResponseWriter, r *http.Request, c *call) error {
	return writeJSON(w, c.token)
}

func (s *Server) tokenRenew(w http.ResponseWriter, r *http.Request, c *call) error {
	t, err := s.cfg.Identity.Renew(r.Context(), c.origin(), c.token.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, t)
}

func (s *Server) tokenRevokeSelf(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Identity.Revoke(r.Context(), c.origin(), c.token.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// selfUser is the user name of the caller, for self-service routes.
func (c *call) selfUser() (string, error) {
	if c.token.Principal.Kind != identity.KindUser {
		return "", errkind.New(errkind.Denied, "api: only users enrol MFA")
	}
	return c.token.Principal.Name, nil
}

func (s *Server) totpEnroll(w http.ResponseWriter, r *http.Request, c *call) error {
	user, err := c.selfUser()
	if err != nil {
		return err
	}
	en, err := s.cfg.Identity.EnrollTOTP(r.Context(), c.origin(), user)
	if err != nil {
		return err
	}
	return writeJSON(w, en)
}

// TOTPConfirmRequest is the body of POST /v1/auth/mfa/totp/confirm.
type TOTPConfirmRequest struct {
	Code string `json:"code"`
}

// TOTPConfirmResponse holds the recovery codes, shown once.
type TOTPConfirmResponse struct {
	RecoveryCodes []string `json:"recovery_codes"`
}

func (s *Server) totpConfirm(w http.ResponseWriter, r *http.Request, c *call) error {
	user, err := c.selfUser()
	if err != nil {
		return err
	}
	req, err := decode[TOTPConfirmRequest](r)
	if err != nil {
		return err
	}
	codes, err := s.cfg.Identity.ConfirmTOTP(r.Context(), c.origin(), user, req.Code)
	if err != nil {
		return err
	}
	return writeJSON(w, TOTPConfirmResponse{RecoveryCodes: codes})
}

// CreateUserRequest is the body of POST /v1/users.
type CreateUserRequest struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name,omitempty"`
	Email       string `json:"email,omitempty"`
	Password    string `json:"password,omitempty"`
}

func (s *Server) userCreate(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[CreateUserRequest](r)
	if err != nil {
		return err
	}
	spec := identity.UserSpec{Name: req.Name, DisplayName: req.DisplayName, Email: req.Email}
	if req.Password != "" {
		spec.Password = []byte(req.Password)
	}
	u, err := s.cfg.Identity.CreateUser(r.Context(), c.origin(), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, u)
}

// UserList answers GET /v1/users.
type UserList struct {
	Users []identity.User `json:"users"`
}

func (s *Server) userList(w http.ResponseWriter, r *http.Request, c *call) error {
	us, err := s.cfg.Identity.Users(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, UserList{Users: nonNil(us)})
}

// UserDetail answers GET /v1/users/{name} and the routes that change one
// user: the user and the state of their login lockout.
type UserDetail struct {
	identity.User
	identity.Lockout
}

func (s *Server) userShow(w http.ResponseWriter, r *http.Request, c *call) error {
	u, err := s.cfg.Identity.User(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	l, err := s.cfg.Identity.Lockout(r.Context(), u.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, UserDetail{User: u, Lockout: l})
}

func (s *Server) userUnlock(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.userChange(w, r, c, s.cfg.Identity.UnlockUser)
}

// SetPasswordRequest is the body of POST /v1/users/{name}/password.
type SetPasswordRequest struct {
	Password string `json:"password"`
}

// userSetPassword sets a user's password and revokes their tokens, except
// the caller's own when they set their own password.
func (s *Server) userSetPassword(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[SetPasswordRequest](r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	keep := ""
	if c.token.Principal == (identity.Principal{Kind: identity.KindUser, Name: name}) {
		keep = c.token.ID
	}
	if _, err := s.cfg.Identity.SetPassword(r.Context(), c.origin(), name, []byte(req.Password), keep); err != nil {
		return err
	}
	return s.userShow(w, r, c)
}

func (s *Server) userDisable(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.userChange(w, r, c, s.cfg.Identity.DisableUser)
}

func (s *Server) userEnable(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.userChange(w, r, c, s.cfg.Identity.EnableUser)
}

func (s *Server) userChange(w http.ResponseWriter, r *http.Request, c *call, change func(ctx context.Context, o audit.Origin, name string) error) error {
	name := r.PathValue("name")
	if err := change(r.Context(), c.origin(), name); err != nil {
		return err
	}
	return s.userShow(w, r, c)
}

func (s *Server) userDelete(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Identity.DeleteUser(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// CreateGroupRequest is the body of POST /v1/groups.
type CreateGroupRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

func (s *Server) groupCreate(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[CreateGroupRequest](r)
	if err != nil {
		return err
	}
	g, err := s.cfg.Identity.CreateGroup(r.Context(), c.origin(), req.Name, req.Description)
	if err != nil {
		return err
	}
	return writeJSON(w, g)
}

// GroupList answers GET /v1/groups.
type GroupList struct {
	Groups []identity.Group `json:"groups"`
}

func (s *Server) groupList(w http.ResponseWriter, r *http.Request, c *call) error {
	gs, err := s.cfg.Identity.Groups(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, GroupList{Groups: nonNil(gs)})
}

func (s *Server) groupShow(w http.ResponseWriter, r *http.Request, c *call) error {
	g, err := s.cfg.Identity.Group(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, g)
}

func (s *Server) groupAddMember(w http.ResponseWriter, r *http.Request, c *call) error {
	m, err := decode[identity.Member](r)
	if err != nil {
		return err
	}
	if err := s.cfg.Identity.AddMember(r.Context(), c.origin(), r.PathValue("name"), m); err != nil {
		return err
	}
	return s.groupShow(w, r, c)
}

func (s *Server) groupRemoveMember(w http.ResponseWriter, r *http.Request, c *call) error {
	m := identity.Member{Kind: r.PathValue("kind"), Name: r.PathValue("member")}
	if err := s.cfg.Identity.RemoveMember(r.Context(), c.origin(), r.PathValue("name"), m); err != nil {
		return err
	}
	return s.groupShow(w, r, c)
}

// CreateMachineRequest is the body of POST /v1/machines.
type CreateMachineRequest struct {
	Name     string `json:"name"`
	TokenTTL string `json:"token_ttl,omitempty"` // Go duration, e.g. "20m"
}

func parseDuration(v, field string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, errkind.New(errkind.Invalid, "api: %s must be a duration such as 20m or 24h", field)
	}
	return d, nil
}

func (s *Server) machineCreate(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[CreateMachineRequest](r)
	if err != nil {
		return err
	}
	ttl, err := parseDuration(req.TokenTTL, "token_ttl")
	if err != nil {
		return err
	}
	m, err := s.cfg.Identity.CreateMachine(r.Context(), c.origin(), identity.MachineSpec{Name: req.Name, TokenTTL: ttl})
	if err != nil {
		return err
	}
	return writeJSON(w, m)
}

// MachineList answers GET /v1/machines.
type MachineList struct {
	Machines []identity.Machine `json:"machines"`
}

func (s *Server) machineList(w http.ResponseWriter, r *http.Request, c *call) error {
	ms, err := s.cfg.Identity.Machines(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, MachineList{Machines: nonNil(ms)})
}

func (s *Server) machineShow(w http.ResponseWriter, r *http.Request, c *call) error {
	m, err := s.cfg.Identity.Machine(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, m)
}

func (s *Server) machineDisable(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Identity.DisableMachine(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	return s.machineShow(w, r, c)
}

func (s *Server) machineEnable(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Identity.EnableMachine(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	return s.machineShow(w, r, c)
}

func (s *Server) machineDelete(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Identity.DeleteMachine(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// SecretIDList answers GET /v1/machines/{name}/secret-ids.
type SecretIDList struct {
	SecretIDs []identity.SecretIDInfo `json:"secret_ids"`
}

func (s *Server) machineSecretIDs(w http.ResponseWriter, r *http.Request, c *call) error {
	ids, err := s.cfg.Identity.SecretIDs(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, SecretIDList{SecretIDs: nonNil(ids)})
}

func (s *Server) machineRevokeSecret(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Identity.RevokeSecretID(r.Context(), c.origin(), r.PathValue("name"), r.PathValue("accessor")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// RevokedSecretIDs answers DELETE /v1/machines/{name}/secret-ids: the
// accessors of the secret ids revoked.
type RevokedSecretIDs struct {
	Revoked []string `json:"revoked"`
}

func (s *Server) machineRevokeSecrets(w http.ResponseWriter, r *http.Request, c *call) error {
	revoked, err := s.cfg.Identity.RevokeSecretIDs(r.Context(), c.origin(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, RevokedSecretIDs{Revoked: nonNil(revoked)})
}

// IssueSecretIDRequest is the body of POST /v1/machines/{name}/secret-ids.
type IssueSecretIDRequest struct {
	Uses  int      `json:"uses,omitempty"`
	TTL   string   `json:"ttl,omitempty"`
	CIDRs []string `json:"cidrs,omitempty"`
}

// IssueSecretIDResponse holds the secret id, shown once.
type IssueSecretIDResponse struct {
	SecretID string                `json:"secret_id"`
	Info     identity.SecretIDInfo `json:"info"`
}

func (s *Server) machineIssueSecret(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[IssueSecretIDRequest](r)
	if err != nil {
		return err
	}
	ttl, err := parseDuration(req.TTL, "ttl")
	if err != nil {
		return err
	}
	if req.Uses < 0 {
		return errkind.New(errkind.Invalid, "api: uses must be 0 (unlimited) or more")
	}
	spec := identity.SecretIDSpec{Uses: req.Uses, TTL: ttl}
	for _, cidr := range req.CIDRs {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return errkind.New(errkind.Invalid, "api: %q is not a CIDR such as 10.0.0.0/8", cidr)
		}
		spec.CIDRs = append(spec.CIDRs, p.Masked())
	}
	secret, info, err := s.cfg.Identity.IssueSecretID(r.Context(), c.origin(), r.PathValue("name"), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, IssueSecretIDResponse{SecretID: secret, Info: info})
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}
