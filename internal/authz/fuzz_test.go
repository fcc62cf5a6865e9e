package authz

import (
	"context"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
)

func FuzzParseUID(f *testing.F) {
	for _, s := range []string{
		`User::"alice"`, `Group::"dba"`, `Account::"prod-pg/postgres"`, `System::"warder"`,
		`User::"quote \" and \\ backslash"`, `User::"\u{1F600}"`, `User::"tab\there"`, `User::""`,
		`User::alice`, `A::B::"x"`, `::"x"`, `User::"x" `, `User::"x"::"y"`, `1User::"x"`, `User::"\0"`, `User::"\q"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUID(s)
		if err != nil {
			if !errkind.Is(err, errkind.Invalid) {
				t.Fatalf("ParseUID(%q): %v, not Invalid", s, err)
			}
			return
		}
		if err := u.check("entity"); err != nil {
			t.Fatalf("ParseUID(%q) = %#v, which check refuses: %v", s, u, err)
		}
		v, err := ParseUID(u.String())
		if err != nil || v != u {
			t.Fatalf("ParseUID(%q) = %#v; String %q parses to %#v, %v", s, u, u.String(), v, err)
		}
	})
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		`permit(principal in Group::"admins", action, resource);`,
		`permit(principal in Group::"dba", action == Action::"checkout", resource in Target::"prod-pg") when { context.mfa && context.mfa_age_seconds < 600 && context.source_ip.isInRange(ip("10.0.0.0/8")) && ["mon","tue","wed","thu","fri"].contains(context.time.weekday) && context has ticket };`,
		`forbid(principal, action, resource in Target::"db1") unless { context.via == "ssh" };`,
		`@id("x") permit(principal == User::"a", action in [Action::"checkout", Action::"checkin"], resource == Account::"a");
		 permit(principal is Machine in Group::"ci", action == Action::"read_secret", resource is Secret);`,
		`permit(principal, action, resource) when { resource has kind && resource.kind like "pg*" };`,
		`permit(principal, action, resource) when { context.mfa_age_seconds + 9223372036854775807 > 0 };`,
		`permit(principal, action == Action::"fly", resource);`,
		`permit(principal, action, resource) when { context.mfa == "yes" };`,
		`permit(principal, action, resource`,
		``,
	} {
		f.Add(s)
	}
	m, err := newModel()
	if err != nil {
		f.Fatal(err)
	}
	res := newMemResolver()
	res.add(user("alice"), group("dba"), group("admins"))
	res.add(account("a"), target("prod-pg"))
	a := &Authorizer{model: m, resolver: res, now: func() time.Time { return time.Date(2026, 1, 7, 10, 0, 0, 0, time.UTC) }, loc: time.UTC}
	f.Fuzz(func(t *testing.T, text string) {
		ps, err := m.compile("fuzz", text, true)
		if err != nil {
			if k := errkind.Of(err); k != errkind.Invalid && k != errkind.TooLarge {
				t.Fatalf("compile: %v, of kind %v", err, k)
			}
			return
		}
		// What is accepted loads again from storage and evaluates,
		// indexed and not, to the same decision, without panicking.
		again, err := m.compile("fuzz", text, false)
		if err != nil || len(again) != len(ps) {
			t.Fatalf("accepted text does not load: %v", err)
		}
		s := &policySet{all: ps, index: newIndex(ps, m.actions)}
		req := Request{Principal: user("alice"), Action: ActionCheckout, Resource: account("a"), Context: Context{MFA: true, Ticket: "t"}}
		d1, err1 := a.evaluate(context.Background(), req, s, false)
		d2, err2 := a.evaluate(context.Background(), req, s, true)
		if err1 != nil || err2 != nil || d1.Allow != d2.Allow || len(d1.Policies) != len(d2.Policies) {
			t.Fatalf("indexed %+v, %v; full %+v, %v", d1, err1, d2, err2)
		}
	})
}
