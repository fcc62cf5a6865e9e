package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// TestLeaseListOwnOnly: GET /v1/leases shows a caller their own leases
// and waits only, unless they administer or may read the audit log; the
// lease ids of others are never shown to them. Extending another's lease
// is refused like an unknown one, and audited.
func TestLeaseListOwnOnly(t *testing.T) {
	f := newFixture(t)
	admin := f.initAndUnseal(t)
	ctx := context.Background()
	tokens := map[string]string{"admin": admin}
	for _, name := range []string{"alice", "bob", "carol"} {
		if _, err := f.id.CreateUser(ctx, testO, identity.UserSpec{Name: name, Password: []byte("correct horse battery")}); err != nil {
			t.Fatal(err)
		}
		tokens[name] = f.login(t, name, "correct horse battery")
	}
	for name, text := range map[string]string{
		"alice-checkout": `permit(principal == User::"alice", action == Action::"checkout", resource in Target::"tgt");`,
		"bob-checkout":   `permit(principal == User::"bob", action == Action::"checkout", resource in Target::"tgt");`,
		"carol-audits":   `permit(principal == User::"carol", action == Action::"audit_read", resource == System::"warder");`,
	} {
		if _, err := f.authz.Put(ctx, testO, name, text); err != nil {
			t.Fatal(err)
		}
	}
	leaseOf := map[string]string{}
	for _, who := range []string{"alice", "bob"} {
		id := mkAccount(f, t, uniq())
		r := f.do(t, "POST", "/v1/accounts/"+id+"/checkout", tokens[who], `{"reason":"secret reason of `+who+`"}`)
		if r.status != 200 {
			t.Fatalf("%s checks out %s: %d %s", who, id, r.status, r.body)
		}
		var l vault.Lease
		json.Unmarshal([]byte(r.body), &l)
		leaseOf[who] = l.ID
	}

	for _, tc := range []struct {
		who  string
		want []string // holders listed
	}{
		{"alice", []string{"user:alice"}},
		{"bob", []string{"user:bob"}},
		{"carol", []string{"user:alice", "user:bob"}}, // audit_read
		{"admin", []string{"user:alice", "user:bob"}},
	} {
		t.Run(tc.who, func(t *testing.T) {
			r := f.do(t, "GET", "/v1/leases", tokens[tc.who], "")
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			var ll vault.LeaseList
			if err := json.Unmarshal([]byte(r.body), &ll); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range ll.Leases {
				got = append(got, l.Holder)
			}
			want := tc.want
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("holders listed %v, want %v", got, want)
			}
			for other, id := range leaseOf {
				if other != tc.who && !slices.Contains(want, "user:"+other) && strings.Contains(r.body, id) {
					t.Errorf("%s sees %s's lease id", tc.who, other)
				}
				if other != tc.who && !slices.Contains(want, "user:"+other) && strings.Contains(r.body, "secret reason of "+other) {
					t.Errorf("%s sees %s's reason", tc.who, other)
				}
			}
		})
	}

	// alice tries to extend bob's lease: not found, as if it did not
	// exist, and audited.
	r := f.do(t, "POST", "/v1/leases/"+leaseOf["bob"]+"/extend", tokens["alice"], `{"ttl":"10m"}`)
	if r.status != 404 || strings.Contains(r.body, "bob") {
		t.Errorf("alice extends bob's lease: %d %s", r.status, r.body)
	}
	evs, err := f.audit.List(ctx, audit.Filter{Action: "account.lease_extend", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Actor != "user:alice" || evs[0].Outcome != audit.OutcomeFailure || evs[0].Details["error"] != "not_holder" || evs[0].Source == "" {
		t.Errorf("lease_extend events %+v", evs)
	}
}
