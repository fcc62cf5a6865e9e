package client

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// testServer runs handler over TLS and returns a client trusting it.
func testServer(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Addr: srv.URL, Token: "wt1.test", CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckPolicy(t *testing.T) {
	var gotBody map[string]any
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/policies/check" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &gotBody)
		io.WriteString(w, `{"decision":"deny","policies":null}`)
	})
	d, err := c.CheckPolicy(t.Context(), CheckRequest{
		Principal: `User::"alice"`, Action: "checkout", Resource: `Account::"prod-pg/postgres"`,
		Context: json.RawMessage(`{"mfa":true}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"principal": `User::"alice"`, "action": "checkout", "resource": `Account::"prod-pg/postgres"`, "context": map[string]any{"mfa": true}}
	if !reflect.DeepEqual(gotBody, want) {
		t.Errorf("request body = %v, want %v", gotBody, want)
	}
	if d.Allowed() || d.Policies == nil {
		t.Errorf("decision = %+v, want deny with non-nil policies", d)
	}
	// The JSON shape is the CLI's contract: exactly decision and policies,
	// plus errors only when there are some.
	for _, tc := range []struct {
		d    Decision
		want string
	}{
		{d, `{"decision":"deny","policies":[]}`},
		{Decision{Decision: "allow", Policies: []string{"admins"}}, `{"decision":"allow","policies":["admins"]}`},
		{Decision{Decision: "deny", Policies: []string{}, Errors: []string{"p: boom"}}, `{"decision":"deny","policies":[],"errors":["p: boom"]}`},
	} {
		b, _ := json.Marshal(tc.d)
		if string(b) != tc.want {
			t.Errorf("json = %s, want %s", b, tc.want)
		}
	}
}

func TestPathEscaping(t *testing.T) {
	var got string
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.EscapedPath()
		io.WriteString(w, `{"name":"x","members":[]}`)
	})
	if _, err := c.RemoveGroupMember(t.Context(), "ops team", Member{Kind: "user", Name: "a/b"}); err != nil {
		t.Fatal(err)
	}
	if want := "/v1/groups/ops%20team/members/user/a%2Fb"; got != want {
		t.Errorf("path = %s, want %s", got, want)
	}
}

func TestErrors(t *testing.T) {
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"code":"unauthenticated","message":"identity: a TOTP code is required","request_id":"r1"}}`)
	})
	_, err := c.Login(t.Context(), LoginRequest{User: "alice", Password: "pw"})
	if !IsTOTPRequired(err) || !IsCode(err, "unauthenticated") {
		t.Errorf("Login error %v: want TOTP required", err)
	}
	for _, msg := range []string{"identity: invalid TOTP code or recovery code", "identity: invalid user name or password"} {
		if IsTOTPRequired(&Error{Code: "unauthenticated", Message: msg}) {
			t.Errorf("IsTOTPRequired(%q) = true", msg)
		}
	}
}

func TestMachineDecoding(t *testing.T) {
	var m Machine
	if err := json.Unmarshal([]byte(`{"name":"ci","role_id":"r","token_ttl":1200000000000,"token_max_ttl":"1h","created_at":"2025-01-02T03:04:05Z"}`), &m); err != nil {
		t.Fatal(err)
	}
	if time.Duration(m.TokenTTL) != 20*time.Minute || time.Duration(m.TokenMaxTTL) != time.Hour {
		t.Errorf("decoded %+v", m)
	}
	b, _ := json.Marshal(m.TokenTTL)
	if string(b) != `"20m0s"` {
		t.Errorf("Duration encodes as %s", b)
	}
	if err := json.Unmarshal([]byte(`{"token_ttl":true}`), &m); err == nil {
		t.Error("a boolean token_ttl decoded")
	}
}
