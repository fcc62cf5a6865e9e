package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// dbCertificateBody is a request body with a fresh ECDSA P-256 key.
func dbCertificateBody(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(api.DBCertificateRequest{PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	return string(b)
}

// mkDBTarget creates the postgres target pgdb (once), which bob may
// connect to.
func mkDBTarget(f *fixture, t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.vault.Target(ctx, "pgdb"); err == nil {
		return
	}
	if _, err := f.vault.AddTarget(ctx, testO, vault.TargetSpec{Name: "pgdb", Kind: "postgres", Host: "127.0.0.1", Port: 5432}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.authz.Put(ctx, testO, "bob-pgdb", `permit(principal == User::"bob", action == Action::"connect", resource in Target::"pgdb");`); err != nil {
		t.Fatal(err)
	}
}

func TestDBToken(t *testing.T) {
	f := newFixture(t)
	admin := f.initAndUnseal(t)
	ctx := context.Background()
	for _, name := range []string{"bob", "carol"} {
		if _, err := f.id.CreateUser(ctx, audit.Origin{Actor: "test"}, identity.UserSpec{Name: name, Password: []byte("correct horse battery")}); err != nil {
			t.Fatal(err)
		}
	}
	mkDBTarget(f, t)
	bob := f.login(t, "bob", "correct horse battery")
	self := f.do(t, "GET", "/v1/auth/token/self", bob, "")
	var bobTok identity.Token
	json.Unmarshal([]byte(self.body), &bobTok)

	r := f.do(t, "POST", "/v1/db/token", bob, `{"target":"pgdb","account":"app"}`)
	if r.status != 200 {
		t.Fatalf("db token: %d %s", r.status, r.body)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	var tok api.DBTokenResponse
	json.Unmarshal([]byte(r.body), &tok)
	if tok.Token == "" || tok.User != "app@pgdb" || tok.Database != "postgres" || tok.TokenID == "" {
		t.Errorf("db token = %+v", tok)
	}
	if d := time.Until(tok.ExpiresAt); d > time.Hour || d < 59*time.Minute || tok.ExpiresAt.After(bobTok.ExpiresAt) {
		t.Errorf("expires %v (in %v), bob's token %v; want about an hour, not after bob's", tok.ExpiresAt, d, bobTok.ExpiresAt)
	}

	// The database token cannot drive the API, not even to see itself.
	for _, path := range []string{"/v1/auth/token/self", "/v1/grants"} {
		e := wantError(t, f.do(t, "GET", path, tok.Token, ""), 401, "unauthenticated")
		if !strings.Contains(e.Error.Message, "scoped to the database gateway") {
			t.Errorf("%s with a db token: %q", path, e.Error.Message)
		}
	}
	wantError(t, f.do(t, "POST", "/v1/db/token", tok.Token, `{"target":"pgdb"}`), 401, "unauthenticated")
	evs, err := f.audit.List(ctx, audit.Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var issued, refused int
	for _, ev := range evs {
		if strings.Contains(jsonOf(t, ev), tok.Token[len(tok.Token)-43:]) {
			t.Errorf("audit event %s holds the db token's secret", ev.Action)
		}
		switch {
		case ev.Action == "auth.db_token.issue" && ev.Details["scope"] == "db:pgdb/app":
			issued++
		case ev.Action == "auth.request" && ev.Outcome == audit.OutcomeDeny && ev.Details["reason"] == "scoped token" && ev.Actor == "user:bob":
			refused++
		}
	}
	if issued != 1 || refused < 3 {
		t.Errorf("%d issue events, %d scoped-token refusals; want 1, at least 3", issued, refused)
	}

	// carol may not connect to pgdb: no token.
	carol := f.login(t, "carol", "correct horse battery")
	wantError(t, f.do(t, "POST", "/v1/db/token", carol, `{"target":"pgdb"}`), 403, "denied")
	// Bad requests.
	wantError(t, f.do(t, "POST", "/v1/db/token", bob, `{"target":"pgdb","ttl":"9h"}`), 400, "invalid")
	wantError(t, f.do(t, "POST", "/v1/db/token", bob, `{"target":""}`), 400, "invalid")
	mkAccount(f, t, 1) // target tgt, of kind mem
	wantError(t, f.do(t, "POST", "/v1/db/token", admin, `{"target":"tgt"}`), 400, "invalid")
	// Shorter on request.
	r = f.do(t, "POST", "/v1/db/token", bob, `{"target":"pgdb","ttl":"5m"}`)
	json.Unmarshal([]byte(r.body), &tok)
	if r.status != 200 || time.Until(tok.ExpiresAt) > 5*time.Minute || tok.User != "pgdb" {
		t.Errorf("5m token: %d %+v", r.status, tok)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDBCertificate(t *testing.T) {
	f := newFixture(t)
	f.initAndUnseal(t)
	ctx := context.Background()
	if _, err := f.id.CreateUser(ctx, audit.Origin{Actor: "test"}, identity.UserSpec{Name: "bob", Password: []byte("correct horse battery")}); err != nil {
		t.Fatal(err)
	}
	bob := f.login(t, "bob", "correct horse battery")
	var bobTok identity.Token
	json.Unmarshal([]byte(f.do(t, "GET", "/v1/auth/token/self", bob, "").body), &bobTok)

	r := f.do(t, "POST", "/v1/auth/db/certificate", bob, dbCertificateBody(t))
	if r.status != 200 {
		t.Fatalf("certificate: %d %s", r.status, r.body)
	}
	var res api.DBCertificateResponse
	json.Unmarshal([]byte(r.body), &res)
	var info api.DBInfo
	json.Unmarshal([]byte(f.do(t, "GET", "/v1/sys/db", "", "").body), &info)
	if info.ClientCA == "" || info.ClientCA != res.ClientCA || info.Listen != "" {
		t.Errorf("sys/db = %+v; want the certificate's CA and no gateway", info)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(info.ClientCA))
	block, _ := pem.Decode([]byte(res.Certificate))
	if block == nil {
		t.Fatalf("certificate %q is not PEM", res.Certificate)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not verify against /v1/sys/db's CA: %v", err)
	}
	if cert.Subject.CommonName != "bob" || len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:warder:token:"+bobTok.ID ||
		cert.NotAfter.After(bobTok.ExpiresAt) || !cert.NotAfter.Equal(res.NotAfter) {
		t.Errorf("certificate CN %q, URIs %v, NotAfter %v; want bob, his token %s, not after %v", cert.Subject.CommonName, cert.URIs, cert.NotAfter, bobTok.ID, bobTok.ExpiresAt)
	}
	wantError(t, f.do(t, "POST", "/v1/auth/db/certificate", bob, `{"public_key":"ssh-ed25519 AAAA"}`), 400, "invalid")
	evs, _ := f.audit.List(ctx, audit.Filter{Limit: 1000})
	n := 0
	for _, ev := range evs {
		if ev.Action == "db.certificate.issue" && ev.Actor == "user:bob" && ev.Details["token"] == bobTok.ID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d db.certificate.issue events, want 1", n)
	}
	// Sealed, there is no CA.
	f.b.Seal()
	wantError(t, f.do(t, "GET", "/v1/sys/db", "", ""), 503, "sealed")
}
