package vault

import (
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

func TestSecrets(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		e := newEnv(t, open(t), envOpts{fixedClock: true})
		v := e.vault
		e.addTarget(t, "app")
		m1, err := v.PutSecret(e.ctx, admin, "app/db", map[string]string{"DB_PASSWORD": "one", "DB_USER": "app"})
		if err != nil || m1.Version != 1 || strings.Join(m1.Keys, ",") != "DB_PASSWORD,DB_USER" {
			t.Fatalf("PutSecret = %+v, %v", m1, err)
		}
		m2, err := v.PutSecret(e.ctx, admin, "app/db", map[string]string{"DB_PASSWORD": "two"})
		if err != nil || m2.Version != 2 {
			t.Fatalf("PutSecret v2 = %+v, %v", m2, err)
		}
		if _, err := v.PutSecret(e.ctx, admin, "other/x", map[string]string{"K": "v"}); err != nil {
			t.Fatal(err)
		}
		ci := identity.Principal{Kind: identity.KindMachine, Name: "ci"}
		o := audit.Origin{Actor: "machine:ci"}
		data, meta, err := v.GetSecret(e.ctx, o, ci, "app/db", 0, authz.Context{})
		if err != nil || meta.Version != 2 || data["DB_PASSWORD"] != "two" || len(data) != 1 {
			t.Fatalf("GetSecret latest = %v %+v %v", data, meta, err)
		}
		data, meta, err = v.GetSecret(e.ctx, o, ci, "app/db", 1, authz.Context{})
		if err != nil || meta.Version != 1 || data["DB_PASSWORD"] != "one" || data["DB_USER"] != "app" {
			t.Fatalf("GetSecret v1 = %v %+v %v", data, meta, err)
		}
		_, _, err = v.GetSecret(e.ctx, o, ci, "app/db", 3, authz.Context{})
		wantKind(t, "missing version", err, errkind.NotFound)
		_, _, err = v.GetSecret(e.ctx, o, ci, "app/none", 0, authz.Context{})
		wantKind(t, "missing secret", err, errkind.NotFound)
		// Policy: ci may read under the app target only; alice nothing.
		_, _, err = v.GetSecret(e.ctx, o, ci, "other/x", 0, authz.Context{})
		wantKind(t, "outside app", err, errkind.Denied)
		_, _, err = v.GetSecret(e.ctx, o, user("alice"), "app/db", 0, authz.Context{})
		wantKind(t, "alice", err, errkind.Denied)
		if data, _, err := v.GetSecret(e.ctx, admin, user("admin"), "other/x", 0, authz.Context{}); err != nil || data["K"] != "v" {
			t.Errorf("admin read = %v, %v", data, err)
		}

		list, err := v.ListSecrets(e.ctx)
		if err != nil || len(list) != 2 || list[0].Path != "app/db" || list[0].Version != 2 || list[1].Path != "other/x" {
			t.Errorf("ListSecrets = %+v, %v", list, err)
		}
		if n := len(e.eventsOf(t, "secret.read")); n != 3 {
			t.Errorf("%d secret.read events, want 3", n)
		}
		if n := len(e.eventsOf(t, "secret.put")); n != 3 {
			t.Errorf("%d secret.put events, want 3", n)
		}

		for name, tc := range map[string]struct {
			path string
			data map[string]string
			want errkind.Kind
		}{
			"bad path":  {"/abs", map[string]string{"K": "v"}, errkind.Invalid},
			"upper":     {"App", map[string]string{"K": "v"}, errkind.Invalid},
			"empty":     {"app/e", map[string]string{}, errkind.Invalid},
			"bad key":   {"app/e", map[string]string{"A-B": "v"}, errkind.Invalid},
			"too large": {"app/e", map[string]string{"K": strings.Repeat("x", MaxSecretBytes)}, errkind.TooLarge},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := v.PutSecret(e.ctx, admin, tc.path, tc.data)
				wantKind(t, "PutSecret", err, tc.want)
			})
		}
	})
}
