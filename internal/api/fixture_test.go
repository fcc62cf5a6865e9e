package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/operator"
	"github.com/warderhq/warder/internal/recording"
	"github.com/warderhq/warder/internal/rotation"
	"github.com/warderhq/warder/internal/server"
	"github.com/warderhq/warder/internal/testenv"
	"github.com/warderhq/warder/internal/vault"
)

// fixture is the API wired to real components on a fresh SQLite store.
type fixture struct {
	srv      *httptest.Server
	api      *api.Server
	audit    *audit.Log
	b        *barrier.Barrier
	id       *identity.Directory
	authz    *authz.Authorizer
	vault    *vault.Vault
	access   *access.Access
	recorder *recording.Recorder
}

// openTarget is a target kind whose accounts accept any change and the
// password "right" or anything they were changed to: enough for the API's
// access tests, which exercise no connector.
type openTarget struct{}

func (openTarget) Kind() string                       { return "mem" }
func (openTarget) CheckTarget(connector.Target) error { return nil }
func (openTarget) Kinds() []connector.CredentialKind {
	return []connector.CredentialKind{connector.Password}
}
func (openTarget) Verify(context.Context, connector.Target, string, connector.Credential) error {
	return nil
}
func (openTarget) Change(context.Context, connector.Target, connector.ChangeRequest) error {
	return nil
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db := testenv.SQLite(t)
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	lg, err := audit.New(ctx, audit.Config{DB: db, Signer: audit.BarrierSigner(b)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	id, err := identity.New(ctx, identity.Config{DB: db, Audit: lg, Barrier: b})
	if err != nil {
		t.Fatal(err)
	}
	ents := server.EntityResolver(id, nil)
	az, err := authz.New(ctx, authz.Config{DB: db, Audit: lg, Entities: ents})
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.New(ctx, vault.Config{DB: db, Audit: lg, Barrier: b, Authz: az, Kinds: []string{"postgres", "mem"}})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := rotation.New(rotation.Config{Vault: v, Connectors: connector.Registry{"mem": openTarget{}}, Audit: lg})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := access.New(ctx, access.Config{DB: db, Audit: lg, Authz: az, Identity: id, Vault: v, Connectors: connector.Registry{"mem": openTarget{}}, Barrier: b})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := recording.New(ctx, recording.Config{DB: db, Audit: lg, Barrier: b})
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Config{
		Operator: &operator.Operator{Barrier: b, Audit: lg, Identity: id},
		Barrier:  b, Audit: lg, Identity: id, Authz: az, Vault: v, Rotation: rot, Access: acc, Recorder: rec,
		Registry:        prometheus.NewRegistry(),
		MaxRequestBytes: 4096,
		ExposeUnsealKey: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	server.SetVault(ents, v)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, api: h, audit: lg, b: b, id: id, authz: az, vault: v, access: acc, recorder: rec}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) do(t *testing.T, method, path, token, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

type errBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

func wantError(t *testing.T, r reply, status int, code string) errBody {
	t.Helper()
	var e errBody
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("body %q is not an error body: %v", r.body, err)
	}
	if r.status != status || e.Error.Code != code {
		t.Fatalf("got %d %q (%s), want %d %q", r.status, e.Error.Code, e.Error.Message, status, code)
	}
	if e.Error.RequestID == "" || e.Error.RequestID != r.header.Get("X-Request-Id") {
		t.Errorf("request id %q in body, %q in header", e.Error.RequestID, r.header.Get("X-Request-Id"))
	}
	return e
}

// initAndUnseal returns the admin token of a freshly initialised server.
func (f *fixture) initAndUnseal(t *testing.T) string {
	t.Helper()
	r := f.do(t, "POST", "/v1/sys/init", "", `{"shares":3,"threshold":2}`)
	if r.status != 200 {
		t.Fatalf("init: %d %s", r.status, r.body)
	}
	var ir api.InitResponse
	json.Unmarshal([]byte(r.body), &ir)
	for _, s := range ir.Shares[:2] {
		body, _ := json.Marshal(api.UnsealRequest{Share: s})
		if r := f.do(t, "POST", "/v1/sys/unseal", "", string(body)); r.status != 200 {
			t.Fatalf("unseal: %d %s", r.status, r.body)
		}
	}
	if f.b.Sealed() {
		t.Fatal("still sealed after threshold shares")
	}
	return ir.AdminToken
}

// login creates nothing; it logs user in with password and returns the token.
func (f *fixture) login(t *testing.T, user, password string) string {
	t.Helper()
	body, _ := json.Marshal(api.LoginRequest{User: user, Password: password})
	r := f.do(t, "POST", "/v1/auth/login", "", string(body))
	if r.status != 200 {
		t.Fatalf("login %s: %d %s", user, r.status, r.body)
	}
	var lr api.LoginResponse
	json.Unmarshal([]byte(r.body), &lr)
	return lr.Token
}
