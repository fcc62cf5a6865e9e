package authz

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/testenv"
)

// TestIndexMatchesFullSet checks that evaluating the index's candidates
// gives the same decision, deciding policies and errors as evaluating
// every policy, on many random requests against a dense world.
func TestIndexMatchesFullSet(t *testing.T) {
	ctx := context.Background()
	w := newWorld(1, 300, 60, 20, 15, 600, 400)
	e := newEnv(t, testenv.SQLite(t), Config{})
	e.res = w.res
	e.az.resolver = w.res
	for name, text := range w.policies {
		e.put(t, name, text)
	}
	s := e.az.set.Load()
	if len(s.all) != len(w.policies)+1 {
		t.Fatalf("%d policies loaded, want %d", len(s.all), len(w.policies)+1)
	}
	var allows, forbids, errs int
	for i := range 10000 {
		// Vary the hour so that time conditions go both ways.
		e.clk.Set(time.Date(2026, 1, 5+i%7, i%24, 0, 0, 0, time.UTC))
		req := w.request(e.clk.Now())
		got, err := e.az.evaluate(ctx, req, s, false)
		if err != nil {
			t.Fatal(err)
		}
		want, err := e.az.evaluate(ctx, req, s, true)
		if err != nil {
			t.Fatal(err)
		}
		if got.Allow != want.Allow || !slices.Equal(got.Policies, want.Policies) || !slices.Equal(got.Errors, want.Errors) {
			t.Fatalf("request %+v:\nindexed %+v\nfull    %+v", req, got, want)
		}
		switch {
		case got.Allow:
			allows++
		case len(got.Policies) > 0:
			forbids++
		}
		if len(got.Errors) > 0 {
			errs++
		}
	}
	t.Logf("allows %d, forbids %d, with errors %d", allows, forbids, errs)
	if allows < 100 || forbids < 100 || errs < 100 {
		t.Errorf("the random requests do not exercise allows (%d), forbids (%d) and errors (%d) enough", allows, forbids, errs)
	}
}
