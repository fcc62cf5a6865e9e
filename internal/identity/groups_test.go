package identity

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestGroups(t *testing.T) {
	forBackends(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, nil)
		ctx, d := e.ctx, e.dir
		e.mustUser(t, "alice", nil)
		if _, err := d.CreateMachine(ctx, admin, MachineSpec{Name: "ci"}); err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{"dev", "eng", "all"} {
			if _, err := d.CreateGroup(ctx, admin, g, "the "+g+" group"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := d.CreateGroup(ctx, admin, "dev", ""); !errkind.Is(err, errkind.Conflict) {
			t.Errorf("duplicate group = %v", err)
		}
		if _, err := d.CreateGroup(ctx, admin, "Bad", ""); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("bad group name = %v", err)
		}
		add := func(g string, m Member) error { return d.AddMember(ctx, admin, g, m) }
		for _, step := range []struct {
			g string
			m Member
		}{
			{"dev", Member{"user", "alice"}},
			{"dev", Member{"machine", "ci"}},
			{"eng", Member{"group", "dev"}},
			{"all", Member{"group", "eng"}},
			{"all", Member{"user", "alice"}},
		} {
			if err := add(step.g, step.m); err != nil {
				t.Fatalf("AddMember(%s, %v): %v", step.g, step.m, err)
			}
		}
		parents := func(kind, name string) []string {
			t.Helper()
			ps, err := d.Parents(ctx, kind, name)
			if err != nil {
				t.Fatalf("Parents(%s %s): %v", kind, name, err)
			}
			return ps
		}
		for _, tt := range []struct {
			kind, name string
			want       []string
		}{
			{"user", "alice", []string{"all", "dev"}},
			{"machine", "ci", []string{"dev"}},
			{"group", "dev", []string{"eng"}},
			{"group", "eng", []string{"all"}},
			{"group", "all", nil},
			{"user", "nobody", nil},
		} {
			if got := parents(tt.kind, tt.name); !slices.Equal(got, tt.want) {
				t.Errorf("Parents(%s %s) = %v, want %v", tt.kind, tt.name, got, tt.want)
			}
		}
		if _, err := d.Parents(ctx, "role", "x"); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Parents(bad kind) = %v", err)
		}

		for _, tt := range []struct {
			name string
			g    string
			m    Member
			kind errkind.Kind
		}{
			{"self", "dev", Member{"group", "dev"}, errkind.Invalid},
			{"two-cycle", "dev", Member{"group", "eng"}, errkind.Invalid},
			{"three-cycle", "dev", Member{"group", "all"}, errkind.Invalid},
			{"duplicate", "dev", Member{"user", "alice"}, errkind.Conflict},
			{"unknown user", "dev", Member{"user", "bob"}, errkind.NotFound},
			{"unknown group", "nogroup", Member{"user", "alice"}, errkind.NotFound},
			{"unknown member group", "dev", Member{"group", "nogroup"}, errkind.NotFound},
			{"bad kind", "dev", Member{"role", "x"}, errkind.Invalid},
		} {
			t.Run(tt.name, func(t *testing.T) { wantKind(t, "AddMember", add(tt.g, tt.m), tt.kind) })
		}

		g, err := d.Group(ctx, "dev")
		if want := []Member{{"machine", "ci"}, {"user", "alice"}}; err != nil || !slices.Equal(g.Members, want) || g.Description != "the dev group" {
			t.Errorf("Group(dev) = %+v, %v; want members %v", g, err, want)
		}
		gs, err := d.Groups(ctx)
		if err != nil || len(gs) != 3 || gs[0].Name != "all" || len(gs[0].Members) != 2 {
			t.Errorf("Groups = %+v, %v", gs, err)
		}
		if _, err := d.Group(ctx, "nogroup"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("Group(nogroup) = %v", err)
		}

		if err := d.RemoveMember(ctx, admin, "all", Member{"user", "alice"}); err != nil {
			t.Fatal(err)
		}
		if got := parents("user", "alice"); !slices.Equal(got, []string{"dev"}) {
			t.Errorf("Parents(alice) after remove = %v", got)
		}
		wantKind(t, "RemoveMember again", d.RemoveMember(ctx, admin, "all", Member{"user", "alice"}), errkind.NotFound)
		// After removing eng from all, the former cycle is allowed.
		if err := d.RemoveMember(ctx, admin, "all", Member{"group", "eng"}); err != nil {
			t.Fatal(err)
		}
		if err := add("dev", Member{"group", "all"}); err != nil {
			t.Errorf("AddMember(dev, all) after breaking the chain: %v", err)
		}

		// Deleting principals and groups drops their memberships.
		if err := d.DeleteUser(ctx, admin, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteMachine(ctx, admin, "ci"); err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteGroup(ctx, admin, "dev"); err != nil {
			t.Fatal(err)
		}
		for _, m := range []Member{{"user", "alice"}, {"machine", "ci"}, {"group", "all"}} {
			if got := parents(m.Kind, m.Name); got != nil {
				t.Errorf("Parents(%v) after deletions = %v", m, got)
			}
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_group_members`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d memberships left, %v", n, err)
		}
		if n := e.countEvents(t, "identity.group.member.add", "success", ""); n != 6 {
			t.Errorf("%d member.add events, want 6", n)
		}
	})
}

// TestParentsAcrossProcesses checks that a Directory sees membership
// changes made by another process within a second.
func TestParentsAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(ctx, store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	e1 := newEnv(t, open(), nil)
	b2, err := barrier.New(ctx, barrier.Config{DB: open()})
	if err != nil {
		t.Fatal(err)
	}
	e2 := newEnvWith(t, open(), b2, nil)
	e1.mustUser(t, "alice", nil)
	if _, err := e1.dir.CreateGroup(ctx, admin, "dev", ""); err != nil {
		t.Fatal(err)
	}
	if ps, err := e2.dir.Parents(ctx, "user", "alice"); err != nil || ps != nil {
		t.Fatalf("Parents before = %v, %v", ps, err)
	}
	if err := e1.dir.AddMember(ctx, admin, "dev", Member{"user", "alice"}); err != nil {
		t.Fatal(err)
	}
	if ps, _ := e1.dir.Parents(ctx, "user", "alice"); !slices.Equal(ps, []string{"dev"}) {
		t.Errorf("own process: Parents = %v", ps)
	}
	if ps, _ := e2.dir.Parents(ctx, "user", "alice"); ps != nil {
		t.Logf("other process saw the change at once (cache was not warm): %v", ps)
	}
	e2.clock.Advance(1100 * time.Millisecond)
	if ps, err := e2.dir.Parents(ctx, "user", "alice"); err != nil || !slices.Equal(ps, []string{"dev"}) {
		t.Errorf("other process after 1.1s: Parents = %v, %v", ps, err)
	}
	if err := e1.dir.RemoveMember(ctx, admin, "dev", Member{"user", "alice"}); err != nil {
		t.Fatal(err)
	}
	e2.clock.Advance(1100 * time.Millisecond)
	if ps, err := e2.dir.Parents(ctx, "user", "alice"); err != nil || ps != nil {
		t.Errorf("other process after removal: Parents = %v, %v", ps, err)
	}
}
