package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/connector"
	sshgw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/identity"
)

func TestAuthMethod(t *testing.T) {
	for _, tc := range []struct {
		name string
		cred *connector.Credential
		ok   bool
	}{
		{"password", &connector.Credential{Kind: connector.Password, Secret: []byte("pw")}, true},
		{"bad ssh key", &connector.Credential{Kind: connector.SSHKey, Secret: []byte("not a key")}, false},
		{"api key", &connector.Credential{Kind: connector.APIKey, Secret: []byte("k")}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := authMethod(tc.cred); (err == nil) != tc.ok {
				t.Errorf("authMethod: err %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// memAuditor keeps events, or fails with err.
type memAuditor struct {
	events []audit.Event
	err    error
}

func (a *memAuditor) Append(_ context.Context, ev audit.Event) (audit.Event, error) {
	if a.err != nil {
		return audit.Event{}, a.err
	}
	a.events = append(a.events, ev)
	return ev, nil
}

func TestCertificateLogin(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	aud := &memAuditor{}
	r := sshResolver{accessCA: ca, audit: aud, now: func() time.Time { return now }}
	alice := identity.Principal{Kind: identity.KindUser, Name: "alice"}
	up, err := r.certificateLogin(context.Background(), alice, "web1", sshgw.Upstream{Addr: "10.0.0.1:22", User: "root"})
	if err != nil {
		t.Fatal(err)
	}
	if len(up.Auth) != 1 || up.Release != nil || up.LeaseID != "" || !up.Expires.Equal(now.Add(time.Hour)) {
		t.Errorf("upstream %+v", up)
	}
	if len(aud.events) != 1 {
		t.Fatalf("audit %+v", aud.events)
	}
	ev := aud.events[0]
	if ev.Action != "ssh.access_certificate.issue" || ev.Actor != "user:alice" || ev.Resource != `Account::"web1/root"` ||
		!strings.HasPrefix(ev.Details["key_id"], "warder:user:alice:") || ev.Details["valid_before"] != now.Add(time.Hour).UTC().Format(time.RFC3339) {
		t.Errorf("event %+v", ev)
	}
	for k, v := range ev.Details {
		if strings.Contains(v, "PRIVATE") || len(v) > 100 {
			t.Errorf("detail %s = %q", k, v)
		}
	}
	// Two logins, two keys.
	_, err = r.certificateLogin(context.Background(), alice, "web1", sshgw.Upstream{User: "root"})
	if err != nil || aud.events[1].Details["fingerprint"] == ev.Details["fingerprint"] || aud.events[1].Details["key_id"] == ev.Details["key_id"] {
		t.Errorf("second login: %v, %+v", err, aud.events)
	}

	for name, tc := range map[string]struct {
		r    sshResolver
		user string
	}{
		"no CA":             {sshResolver{audit: aud}, "root"},
		"bad account":       {r, "root,alice"},
		"audit unavailable": {sshResolver{accessCA: ca, audit: &memAuditor{err: errors.New("audit: disk full")}}, "root"},
	} {
		if _, err := tc.r.certificateLogin(context.Background(), alice, "web1", sshgw.Upstream{User: tc.user}); err == nil {
			t.Errorf("%s: logged in", name)
		}
	}
}
