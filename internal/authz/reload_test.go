package authz

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

// TestFailsClosedWhenReloadKeepsFailing breaks the policy version table:
// the loaded policies stay in force for a while, then Check and Authorize
// fail with Unavailable until a reload succeeds again.
func TestFailsClosedWhenReloadKeepsFailing(t *testing.T) {
	for _, b := range testenv.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			db := b.Open(t)
			e := newEnv(t, db, Config{ReloadInterval: time.Second})
			req := Request{Principal: user("admin"), Action: ActionAdmin, Resource: SystemUID()}
			exec := func(q string) {
				t.Helper()
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			exec(`ALTER TABLE authz_version RENAME TO authz_version_gone`)

			// Within the bound (10 reload intervals), the loaded policies hold.
			for range 10 {
				e.clk.Add(time.Second)
				if d, err := e.az.Check(ctx, req); err != nil || !d.Allow {
					t.Fatalf("Check %v after the first failed reload: %+v, %v; want allow", e.clk.Now(), d, err)
				}
			}
			e.clk.Add(1500 * time.Millisecond)
			d, err := e.az.Check(ctx, req)
			if !errkind.Is(err, errkind.Unavailable) || d.Allow || !strings.Contains(err.Error(), "could not be reloaded since") {
				t.Errorf("Check after 11.5s of failed reloads: %+v, %v; want deny, Unavailable", d, err)
			}
			if d, err := e.az.Authorize(ctx, testOrigin, req); !errkind.Is(err, errkind.Unavailable) || d.Allow {
				t.Errorf("Authorize after 11.5s of failed reloads: %+v, %v; want deny, Unavailable", d, err)
			}

			// A successful reload ends it.
			exec(`ALTER TABLE authz_version_gone RENAME TO authz_version`)
			e.clk.Add(time.Second)
			if d, err := e.az.Check(ctx, req); err != nil || !d.Allow {
				t.Errorf("Check after the table is back: %+v, %v; want allow", d, err)
			}
			if d, err := e.az.Authorize(ctx, testOrigin, req); err != nil || !d.Allow {
				t.Errorf("Authorize after the table is back: %+v, %v; want allow", d, err)
			}
		})
	}
}

// TestIdleIsNotStale checks that a long pause without requests does not
// count as failed reloads.
func TestIdleIsNotStale(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	e.clk.Add(time.Hour)
	req := Request{Principal: user("admin"), Action: ActionAdmin, Resource: SystemUID()}
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() {
			_, err := e.az.Check(context.Background(), req)
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("Check after an hour idle: %v", err)
		}
	}
}

func TestRequestDetailsAudited(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testenv.SQLite(t), Config{})
	base := Request{Principal: user("admin"), Action: ActionAdmin, Resource: SystemUID()}
	long := strings.Repeat("é", 300) // 600 bytes
	tests := []struct {
		name    string
		details map[string]string
		want    map[string]string // details expected besides the built-in ones
		kind    errkind.Kind      // of the error, if any
	}{
		{"none", nil, map[string]string{}, 0},
		{"method and path", map[string]string{"method": "DELETE", "path": "/v1/users/{name}"},
			map[string]string{"method": "DELETE", "path": "/v1/users/{name}"}, 0},
		{"long value clipped on a character", map[string]string{"path": long},
			map[string]string{"path": strings.Repeat("é", maxDetailValue/2)}, 0},
		{"invalid UTF-8 and controls replaced", map[string]string{"path": "/a\xff\x00b\n"},
			map[string]string{"path": "/a\uFFFD\uFFFDb\uFFFD"}, 0},
		{"built-in key", map[string]string{"action": "x"}, nil, errkind.Invalid},
		{"bad key", map[string]string{"Not A Key": "x"}, nil, errkind.Invalid},
		{"too many", func() map[string]string {
			m := map[string]string{}
			for i := range maxDetails + 1 {
				m[string(rune('a'+i))] = "x"
			}
			return m
		}(), nil, errkind.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base
			req.Details = tt.details
			before, _ := e.log.List(ctx, audit.Filter{Action: "authz.decide"})
			d, err := e.az.Authorize(ctx, testOrigin, req)
			if tt.kind != 0 {
				if !errkind.Is(err, tt.kind) || d.Allow {
					t.Errorf("Authorize: %+v, %v; want deny, %v", d, err, tt.kind)
				}
				return
			}
			if err != nil || !d.Allow {
				t.Fatalf("Authorize: %+v, %v", d, err)
			}
			evs, _ := e.log.List(ctx, audit.Filter{Action: "authz.decide"})
			if len(evs) != len(before)+1 {
				t.Fatalf("%d events, want %d", len(evs), len(before)+1)
			}
			got := evs[len(evs)-1].Details
			if got["action"] != ActionAdmin || got["principal"] != `User::"admin"` {
				t.Errorf("built-in details changed: %v", got)
			}
			for _, k := range []string{"action", "principal", "policies", "via"} {
				delete(got, k)
			}
			if len(got) != len(tt.want) {
				t.Errorf("details %q, want %q", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v || !utf8.ValidString(got[k]) {
					t.Errorf("detail %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestClipKeepsCharacters(t *testing.T) {
	s := strings.Repeat("a", 63) + "é"
	if got := clip(s); !utf8.ValidString(got) || got != strings.Repeat("a", 63)+"..." {
		t.Errorf("clip = %q", got)
	}
}
