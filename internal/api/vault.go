package api

import (
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/rotation"
	"github.com/warderhq/warder/internal/vault"
)

// TargetRequest is the body of POST /v1/targets.
type TargetRequest struct {
	Name                   string                `json:"name"`
	Kind                   string                `json:"kind"`
	Host                   string                `json:"host"`
	Port                   int                   `json:"port"`
	Options                map[string]string     `json:"options,omitempty"`
	ManagementAccount      string                `json:"management_account,omitempty"`
	PasswordPolicy         *vault.PasswordPolicy `json:"password_policy,omitempty"`
	MaxConcurrentRotations int                   `json:"max_concurrent_rotations,omitempty"`
	Rules                  []vault.Rule          `json:"rules,omitempty"`
}

// RulesRequest is the body of PUT /v1/targets/{name}/rules: the target's
// complete new list of command/statement rules (empty: none).
type RulesRequest struct {
	Rules []vault.Rule `json:"rules"`
}

func (s *Server) targetRules(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[RulesRequest](r)
	if err != nil {
		return err
	}
	t, err := s.cfg.Vault.SetTargetRules(r.Context(), c.origin(), r.PathValue("name"), req.Rules)
	if err != nil {
		return err
	}
	return writeJSON(w, t)
}

func (s *Server) targetAdd(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[TargetRequest](r)
	if err != nil {
		return err
	}
	t, err := s.cfg.Vault.AddTarget(r.Context(), c.origin(), vault.TargetSpec{
		Name: req.Name, Kind: req.Kind, Host: req.Host, Port: req.Port, Options: req.Options,
		ManagementAccount: req.ManagementAccount, PasswordPolicy: req.PasswordPolicy, MaxConcurrentRotations: req.MaxConcurrentRotations,
		Rules: req.Rules,
	})
	if err != nil {
		return err
	}
	return writeJSON(w, t)
}

// TargetList answers GET /v1/targets.
type TargetList struct {
	Targets []vault.Target `json:"targets"`
}

func (s *Server) targetList(w http.ResponseWriter, r *http.Request, c *call) error {
	ts, err := s.cfg.Vault.Targets(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, TargetList{Targets: nonNil(ts)})
}

func (s *Server) targetShow(w http.ResponseWriter, r *http.Request, c *call) error {
	t, err := s.cfg.Vault.Target(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, t)
}

func (s *Server) targetRemove(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Vault.RemoveTarget(r.Context(), c.origin(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// RotationResults answers the rotation of several accounts.
type RotationResults struct {
	Results []rotation.Result `json:"results"`
	Error   string            `json:"error,omitempty"`
}

func (s *Server) targetRotate(w http.ResponseWriter, r *http.Request, c *call) error {
	name := r.PathValue("name")
	if _, err := s.cfg.Vault.Target(r.Context(), name); err != nil {
		return err
	}
	res, err := s.cfg.Rotation.RotateTarget(r.Context(), c.origin(), name)
	out := RotationResults{Results: nonNil(res)}
	if err != nil {
		out.Error = publicError(err)
	}
	return writeJSON(w, out)
}

// publicError is an error's message if it may be shown, else a generic one.
func publicError(err error) string {
	if errkind.Of(err) == errkind.Other {
		return "some rotations failed; the server log has details"
	}
	return err.Error()
}

// AccountRequest is the body of POST /v1/accounts. Exactly one of
// password, private_key or generate.
type AccountRequest struct {
	Target          string                   `json:"target"`
	Username        string                   `json:"username"`
	Kind            connector.CredentialKind `json:"kind,omitempty"`
	Password        string                   `json:"password,omitempty"`
	PrivateKey      string                   `json:"private_key,omitempty"`
	Generate        bool                     `json:"generate,omitempty"`
	MaxCheckouts    int                      `json:"max_checkouts,omitempty"`
	RotateEvery     string                   `json:"rotate_every,omitempty"`
	RotateOnCheckin *bool                    `json:"rotate_on_checkin,omitempty"`
	PasswordPolicy  *vault.PasswordPolicy    `json:"password_policy,omitempty"`
	Dependents      []vault.Dependent        `json:"dependents,omitempty"`
}

// credential builds the initial credential of an account request.
func (req AccountRequest) credential() (*connector.Credential, error) {
	n := 0
	for _, set := range []bool{req.Password != "", req.PrivateKey != "", req.Generate} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errkind.New(errkind.Invalid, "api: give exactly one of password, private_key or generate")
	}
	switch {
	case req.Generate:
		return nil, nil
	case req.PrivateKey != "":
		if req.Kind != "" && req.Kind != connector.SSHKey {
			return nil, errkind.New(errkind.Invalid, "api: a private key needs kind ssh_key")
		}
		signer, err := ssh.ParsePrivateKey([]byte(req.PrivateKey))
		if err != nil {
			return nil, errkind.New(errkind.Invalid, "api: private_key is not an unencrypted OpenSSH or PEM private key")
		}
		pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
		return &connector.Credential{Kind: connector.SSHKey, Secret: []byte(req.PrivateKey), PublicKey: pub}, nil
	}
	if req.Kind == connector.SSHKey {
		return nil, errkind.New(errkind.Invalid, "api: an ssh_key account needs private_key or generate")
	}
	kind := req.Kind
	if kind == "" {
		kind = connector.Password
	}
	return &connector.Credential{Kind: kind, Secret: []byte(req.Password)}, nil
}

func (s *Server) accountAdd(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[AccountRequest](r)
	if err != nil {
		return err
	}
	cred, err := req.credential()
	if err != nil {
		return err
	}
	every, err := parseDuration(req.RotateEvery, "rotate_every")
	if err != nil {
		return err
	}
	kind := req.Kind
	if cred != nil {
		kind = cred.Kind
	}
	a, err := s.cfg.Vault.AddAccount(r.Context(), c.origin(), vault.AccountSpec{
		Target: req.Target, Username: req.Username, Kind: kind, Credential: cred,
		MaxCheckouts: req.MaxCheckouts, RotateOnCheckin: req.RotateOnCheckin, RotateEvery: every,
		PasswordPolicy: req.PasswordPolicy, Dependents: req.Dependents,
	})
	if err != nil {
		return err
	}
	if req.Generate {
		// Set a fresh credential on the target now, through its
		// management account. A failure undoes the add when that loses
		// nothing; the answer says why and what became of the account.
		if _, err := s.cfg.Rotation.Initialize(r.Context(), c.origin(), a.ID); err != nil {
			return err
		}
		if a, err = s.cfg.Vault.Account(r.Context(), a.ID); err != nil {
			return err
		}
	}
	return writeJSON(w, a)
}

// AccountList answers GET /v1/accounts.
type AccountList struct {
	Accounts []vault.Account `json:"accounts"`
}

func (s *Server) accountList(w http.ResponseWriter, r *http.Request, c *call) error {
	as, err := s.cfg.Vault.Accounts(r.Context(), r.URL.Query().Get("target"))
	if err != nil {
		return err
	}
	return writeJSON(w, AccountList{Accounts: nonNil(as)})
}

// accountID is the {target}/{user} of the path.
func accountID(r *http.Request) string { return r.PathValue("target") + "/" + r.PathValue("user") }

func (s *Server) accountShow(w http.ResponseWriter, r *http.Request, c *call) error {
	a, err := s.cfg.Vault.Account(r.Context(), accountID(r))
	if err != nil {
		return err
	}
	return writeJSON(w, a)
}

func (s *Server) accountRemove(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := s.cfg.Vault.RemoveAccount(r.Context(), c.origin(), accountID(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// VersionList answers GET /v1/accounts/{target}/{user}/versions.
type VersionList struct {
	Versions []vault.CredentialVersion `json:"versions"`
}

func (s *Server) accountVersions(w http.ResponseWriter, r *http.Request, c *call) error {
	vs, err := s.cfg.Vault.Versions(r.Context(), accountID(r))
	if err != nil {
		return err
	}
	return writeJSON(w, VersionList{Versions: nonNil(vs)})
}

// accountRotate is authenticated; the policy decides "rotate" on the
// account.
func (s *Server) accountRotate(w http.ResponseWriter, r *http.Request, c *call) error {
	id := accountID(r)
	if _, err := s.cfg.Vault.Account(r.Context(), id); err != nil {
		return err
	}
	if err := s.authorizeResource(r, c, authz.ActionRotate, authz.UID{Type: authz.TypeAccount, ID: id}); err != nil {
		return err
	}
	res, err := s.cfg.Rotation.Rotate(r.Context(), c.origin(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, res)
}

// VerifyResponse answers POST /v1/accounts/{target}/{user}/verify.
type VerifyResponse struct {
	Account string `json:"account"`
	OK      bool   `json:"ok"`
	Status  string `json:"status"`
}

func (s *Server) accountVerify(w http.ResponseWriter, r *http.Request, c *call) error {
	id := accountID(r)
	ok, err := s.cfg.Rotation.Verify(r.Context(), c.origin(), id)
	if err != nil {
		return err
	}
	a, err := s.cfg.Vault.Account(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, VerifyResponse{Account: id, OK: ok, Status: a.Status})
}

// authorizeResource asks the policy engine about action on resource; the
// decision is audited by the engine.
func (s *Server) authorizeResource(r *http.Request, c *call, action string, resource authz.UID) error {
	d, err := s.cfg.Authz.Authorize(r.Context(), c.origin(), authz.Request{
		Principal: principalUID(c.token.Principal), Action: action, Resource: resource,
		Context: c.authzContext(), Details: map[string]string{"route": c.route},
	})
	if err != nil {
		return err
	}
	if !d.Allow {
		return errkind.New(errkind.Denied, "api: %s is not allowed to %s %s", c.token.Principal.Actor(), action, resource)
	}
	return nil
}

// CheckoutRequest is the body of POST …/checkout.
type CheckoutRequest struct {
	Reason string `json:"reason"`
	Ticket string `json:"ticket,omitempty"`
	TTL    string `json:"ttl,omitempty"`
	Wait   bool   `json:"wait,omitempty"`
}

// CheckoutResponse is a lease with its credential, shown once.
type CheckoutResponse struct {
	vault.Lease
	Password   string `json:"password,omitempty"`
	PrivateKey string `json:"private_key,omitempty"`
}

func (s *Server) checkout(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[CheckoutRequest](r)
	if err != nil {
		return err
	}
	ttl, err := parseDuration(req.TTL, "ttl")
	if err != nil {
		return err
	}
	lease, err := s.cfg.Vault.Checkout(r.Context(), c.origin(), vault.CheckoutRequest{
		Account: accountID(r), Principal: c.token.Principal, Reason: req.Reason, Ticket: req.Ticket,
		TTL: ttl, Wait: req.Wait, Context: c.authzContext(),
	})
	if err != nil {
		return err
	}
	out := CheckoutResponse{Lease: lease}
	if cred := lease.Credential; cred != nil {
		if cred.Kind == connector.SSHKey {
			out.PrivateKey = string(cred.Secret)
		} else {
			out.Password = string(cred.Secret)
		}
		clear(cred.Secret)
	}
	return writeJSON(w, out)
}

func (s *Server) checkin(w http.ResponseWriter, r *http.Request, c *call) error {
	lease, err := s.cfg.Vault.Checkin(r.Context(), c.origin(), c.token.Principal, accountID(r))
	if err != nil {
		return err
	}
	return writeJSON(w, lease)
}

// leaseList shows administrators (admin on System) and auditors
// (audit_read) every lease and waiter, and anyone else only their own:
// another holder's lease id would let them extend or follow it.
func (s *Server) leaseList(w http.ResponseWriter, r *http.Request, c *call) error {
	account := r.URL.Query().Get("account")
	var (
		ll  vault.LeaseList
		err error
	)
	if s.requireAdminQuiet(r, c) || s.authorizeResource(r, c, authz.ActionAuditRead, SystemResource) == nil {
		ll, err = s.cfg.Vault.Leases(r.Context(), account)
	} else {
		ll, err = s.cfg.Vault.LeasesHeldBy(r.Context(), account, c.token.Principal.Actor())
	}
	if err != nil {
		return err
	}
	ll.Leases, ll.Waiting = nonNil(ll.Leases), nonNil(ll.Waiting)
	return writeJSON(w, ll)
}

// ExtendRequest is the body of POST /v1/leases/{id}/extend.
type ExtendRequest struct {
	TTL string `json:"ttl"`
}

func (s *Server) leaseExtend(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[ExtendRequest](r)
	if err != nil {
		return err
	}
	ttl, err := parseDuration(req.TTL, "ttl")
	if err != nil {
		return err
	}
	lease, err := s.cfg.Vault.Extend(r.Context(), c.origin(), c.token.Principal, r.PathValue("id"), ttl)
	if err != nil {
		return err
	}
	return writeJSON(w, lease)
}

func (s *Server) leaseForceCheckin(w http.ResponseWriter, r *http.Request, c *call) error {
	lease, err := s.cfg.Vault.ForceCheckin(r.Context(), c.origin(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, lease)
}

// SecretPutRequest is the body of PUT /v1/secrets/{path...}.
type SecretPutRequest struct {
	Data map[string]string `json:"data"`
}

func (s *Server) secretPut(w http.ResponseWriter, r *http.Request, c *call) error {
	req, err := decode[SecretPutRequest](r)
	if err != nil {
		return err
	}
	meta, err := s.cfg.Vault.PutSecret(r.Context(), c.origin(), r.PathValue("path"), req.Data)
	if err != nil {
		return err
	}
	return writeJSON(w, meta)
}

// SecretResponse answers GET /v1/secrets/{path...}.
type SecretResponse struct {
	vault.SecretMeta
	Data map[string]string `json:"data"`
}

func (s *Server) secretGet(w http.ResponseWriter, r *http.Request, c *call) error {
	version := 0
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errkind.New(errkind.Invalid, "api: version must be a positive number")
		}
		version = n
	}
	data, meta, err := s.cfg.Vault.GetSecret(r.Context(), c.origin(), c.token.Principal, r.PathValue("path"), version, c.authzContext())
	if err != nil {
		return err
	}
	return writeJSON(w, SecretResponse{SecretMeta: meta, Data: data})
}

// SecretList answers GET /v1/secrets.
type SecretList struct {
	Secrets []vault.SecretMeta `json:"secrets"`
}

func (s *Server) secretList(w http.ResponseWriter, r *http.Request, c *call) error {
	ms, err := s.cfg.Vault.ListSecrets(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, SecretList{Secrets: nonNil(ms)})
}
