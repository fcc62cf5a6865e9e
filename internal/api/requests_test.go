package api_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/identity"
)

// TestRequestShow: a request is shown to its requester, to every member
// of its approver group whatever its state (pending, approved by them,
// decided), and to administrators; to nobody else.
func TestRequestShow(t *testing.T) {
	f := newFixture(t)
	admin := f.initAndUnseal(t)
	ctx := context.Background()
	const pw = "correct horse battery"
	for _, u := range []string{"bob", "erin", "carol", "dave"} {
		if _, err := f.id.CreateUser(ctx, testO, identity.UserSpec{Name: u, Password: []byte(pw)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.id.CreateGroup(ctx, testO, "approvers", ""); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "erin"} {
		if err := f.id.AddMember(ctx, testO, "approvers", identity.Member{Kind: "user", Name: u}); err != nil {
			t.Fatal(err)
		}
	}
	tokens := map[string]string{"admin": admin}
	for _, u := range []string{"bob", "erin", "carol", "dave"} {
		tokens[u] = f.login(t, u, pw)
	}
	carol := identity.Principal{Kind: identity.KindUser, Name: "carol"}
	check := func(t *testing.T, state, id string, want access.Request) {
		t.Helper()
		for who, ok := range map[string]bool{"carol": true, "bob": true, "erin": true, "admin": true, "dave": false} {
			r := f.do(t, "GET", "/v1/requests/"+id, tokens[who], "")
			if !ok {
				wantError(t, r, 403, "denied")
				continue
			}
			var got struct{ ID, Status string }
			if r.status != 200 || json.Unmarshal([]byte(r.body), &got) != nil || got.ID != id || got.Status != want.Status {
				t.Errorf("%s: %s views the request: %d %s", state, who, r.status, r.body)
			}
		}
	}
	post := func(t *testing.T, who, path, body string) {
		t.Helper()
		if r := f.do(t, "POST", path, tokens[who], body); r.status != 200 {
			t.Fatalf("%s POST %s: %d %s", who, path, r.status, r.body)
		}
	}

	req := mkRequest(f, t, uniq(), carol, 2)
	check(t, "pending", req.ID, access.Request{Status: access.StatusPending})
	post(t, "bob", "/v1/requests/"+req.ID+"/approve", `{"comment":"ok"}`)
	check(t, "approved by bob, still pending", req.ID, access.Request{Status: access.StatusPending})
	post(t, "erin", "/v1/requests/"+req.ID+"/approve", `{"comment":"ok"}`)
	check(t, "approved", req.ID, access.Request{Status: access.StatusApproved})

	req = mkRequest(f, t, uniq(), carol, 1)
	post(t, "bob", "/v1/requests/"+req.ID+"/deny", `{"comment":"no"}`)
	check(t, "denied", req.ID, access.Request{Status: access.StatusDenied})
}
