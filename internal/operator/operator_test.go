package operator_test

import (
	"context"
	"testing"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/operator"
	"github.com/warderhq/warder/internal/testenv"
)

func newOperator(t *testing.T) (*operator.Operator, *audit.Log) {
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
	return &operator.Operator{Barrier: b, Audit: lg, Identity: id}, lg
}

var origin = audit.Origin{Actor: "test"}

func TestInitBootstrapsAdmin(t *testing.T) {
	ctx := context.Background()
	op, lg := newOperator(t)
	res, err := op.Init(ctx, origin, operator.InitRequest{Shares: 3, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Shares) != 3 || res.AdminToken == "" {
		t.Fatalf("Init = %d shares, token %v", len(res.Shares), res.AdminToken != "")
	}
	if _, err := op.Init(ctx, origin, operator.InitRequest{Shares: 3, Threshold: 2}); err == nil {
		t.Fatal("second Init succeeded")
	}
	for _, s := range res.Shares[:2] {
		if _, err := op.Unseal(ctx, origin, s); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := op.Identity.Authenticate(ctx, res.AdminToken)
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	if tok.Principal != (identity.Principal{Kind: identity.KindUser, Name: operator.BootstrapUser}) {
		t.Errorf("admin token speaks for %+v", tok.Principal)
	}
	parents, err := op.Identity.Parents(ctx, "user", operator.BootstrapUser)
	if err != nil || len(parents) != 1 || parents[0] != operator.AdminGroup {
		t.Errorf("admin's groups = %v, %v; want [%s]", parents, err, operator.AdminGroup)
	}
	evs, err := lg.List(ctx, audit.Filter{Action: "sys.init", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var ok int
	for _, ev := range evs {
		if ev.Outcome == audit.OutcomeSuccess {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("%d successful sys.init events, want 1", ok)
	}
}

// Without a durable audit event, nothing happens.
func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	op, lg := newOperator(t)
	res, err := op.Init(ctx, origin, operator.InitRequest{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Unseal(ctx, origin, res.Shares[0]); err != nil {
		t.Fatal(err)
	}
	st, _ := op.Barrier.Status(ctx)
	lg.Close()

	if _, err := op.RotateKey(ctx, origin); err == nil {
		t.Error("RotateKey succeeded without an audit log")
	}
	if st2, _ := op.Barrier.Status(ctx); st2.KeyVersion != st.KeyVersion {
		t.Errorf("key version moved from %d to %d without an audit event", st.KeyVersion, st2.KeyVersion)
	}
	if err := op.ResetUnseal(ctx, origin); err == nil {
		t.Error("ResetUnseal succeeded without an audit log")
	}

	// An unseal that cannot be audited is undone.
	op.Barrier.Seal()
	if _, err := op.Unseal(ctx, origin, res.Shares[0]); err == nil {
		t.Error("Unseal succeeded without an audit log")
	}
	if !op.Barrier.Sealed() {
		t.Error("the barrier stayed unsealed although the unseal could not be audited")
	}
	// Sealing still seals (it only removes access), and reports the failure.
	if _, err := op.Unseal(ctx, origin, res.Shares[0]); err == nil {
		t.Fatal("unexpected")
	}
	if err := op.Seal(ctx, origin); err == nil {
		t.Error("Seal reported success without an audit event")
	}
	if !op.Barrier.Sealed() {
		t.Error("Seal left the barrier unsealed")
	}
}
