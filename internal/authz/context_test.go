package authz

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

func TestContextConditions(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no zone database: %v", err)
	}
	e := newEnv(t, testenv.SQLite(t), Config{Location: berlin})
	e.res.add(user("alice"), group("dba"))
	e.res.add(account("pg/root"), target("prod-pg"))
	e.res.add(account("bastion-db/root"), target("bastion-db"))
	e.put(t, "mfa", `permit(principal in Group::"dba", action == Action::"checkout", resource in Target::"prod-pg")
		when { context.mfa && context.mfa_age_seconds < 600 };`)
	e.put(t, "office", `permit(principal in Group::"dba", action == Action::"connect", resource in Target::"prod-pg")
		when { context.source_ip.isInRange(ip("10.0.0.0/8")) && context.via == "ssh" };`)
	e.put(t, "hours", `permit(principal in Group::"dba", action == Action::"checkin", resource in Target::"prod-pg")
		when { ["mon","tue","wed","thu","fri"].contains(context.time.weekday) && context.time.hour >= 9 && context.time.hour < 17 };`)
	e.put(t, "ticket", `permit(principal in Group::"dba", action == Action::"rotate", resource in Target::"prod-pg")
		when { context has ticket && context.ticket like "CHG-*" };`)
	e.put(t, "day", `permit(principal in Group::"dba", action == Action::"read_secret", resource)
		when { context.time.date == "2026-01-07" && context.time.minute == 30 };`)
	e.put(t, "forward", `permit(principal in Group::"dba", action in [Action::"connect", Action::"port_forward"], resource in Target::"bastion-db")
		when { context has forward && context.forward.direction == "local" && context.forward.port == 5432 &&
			["127.0.0.1", "localhost"].contains(context.forward.host) };`)

	// Wednesday 2026-01-07; 07:30 UTC is 08:30 in Berlin, 08:30 UTC is 09:30.
	wed0730 := time.Date(2026, 1, 7, 7, 30, 0, 0, time.UTC)
	wed0830 := time.Date(2026, 1, 7, 8, 30, 0, 0, time.UTC)
	sat0830 := time.Date(2026, 1, 10, 8, 30, 0, 0, time.UTC)
	// 23:30 UTC on the 6th is 00:30 on the 7th in Berlin.
	tue2330 := time.Date(2026, 1, 6, 23, 30, 0, 0, time.UTC)
	pg := account("pg/root")
	db := account("bastion-db/root")
	fwd := func(dir, host string, port uint16) Context {
		return Context{Via: ViaSSH, Forward: &Forward{Direction: dir, Host: host, Port: port}}
	}
	extra := func(port any) Context {
		return Context{Extra: map[string]any{"forward": map[string]any{"direction": "local", "host": "127.0.0.1", "port": port}}}
	}
	for _, tc := range []struct {
		name   string
		now    time.Time
		action string
		res    UID
		ctx    Context
		allow  bool
	}{
		{"fresh mfa", wed0830, ActionCheckout, pg, Context{MFA: true, MFAAt: wed0830.Add(-5 * time.Minute)}, true},
		{"old mfa", wed0830, ActionCheckout, pg, Context{MFA: true, MFAAt: wed0830.Add(-11 * time.Minute)}, false},
		{"mfa without time", wed0830, ActionCheckout, pg, Context{MFA: true}, false},
		{"no mfa", wed0830, ActionCheckout, pg, Context{MFAAt: wed0830}, false},
		{"mfa via extra", wed0830, ActionCheckout, pg, Context{Extra: map[string]any{"mfa": true, "mfa_age_seconds": json.Number("10")}}, true},
		{"ip in range", wed0830, ActionConnect, pg, Context{SourceIP: netip.MustParseAddr("10.2.3.4"), Via: ViaSSH}, true},
		{"ipv4-mapped ip in range", wed0830, ActionConnect, pg, Context{SourceIP: netip.MustParseAddr("::ffff:10.2.3.4"), Via: ViaSSH}, true},
		{"ip out of range", wed0830, ActionConnect, pg, Context{SourceIP: netip.MustParseAddr("192.0.2.1"), Via: ViaSSH}, false},
		{"no ip", wed0830, ActionConnect, pg, Context{Via: ViaSSH}, false},
		{"ip via api", wed0830, ActionConnect, pg, Context{SourceIP: netip.MustParseAddr("10.2.3.4")}, false},
		{"ip via extra", wed0830, ActionConnect, pg, Context{Via: ViaSSH, Extra: map[string]any{"source_ip": "10.9.9.9"}}, true},
		{"weekday in hours", wed0830, ActionCheckin, pg, Context{}, true},
		{"weekday before hours in zone", wed0730, ActionCheckin, pg, Context{}, false},
		{"saturday", sat0830, ActionCheckin, pg, Context{}, false},
		{"time via extra", sat0830, ActionCheckin, pg, Context{Extra: map[string]any{"time": map[string]any{"hour": 10.0, "minute": 0.0, "weekday": "mon", "date": "2026-01-05"}}}, true},
		{"ticket", wed0830, ActionRotate, pg, Context{Ticket: "CHG-42"}, true},
		{"no ticket", wed0830, ActionRotate, pg, Context{Reason: "CHG-42"}, false},
		{"wrong ticket", wed0830, ActionRotate, pg, Context{Ticket: "INC-1"}, false},
		{"forward to the allowed destination", wed0830, ActionPortForward, db, fwd(ForwardLocal, "127.0.0.1", 5432), true},
		{"forward to a host in capitals", wed0830, ActionPortForward, db, fwd(ForwardLocal, "LocalHost", 5432), true},
		{"forward to another port", wed0830, ActionPortForward, db, fwd(ForwardLocal, "127.0.0.1", 5433), false},
		{"forward to another host", wed0830, ActionPortForward, db, fwd(ForwardLocal, "10.0.0.5", 5432), false},
		{"forward to a host with a suffix", wed0830, ActionPortForward, db, fwd(ForwardLocal, "127.0.0.1.example.com", 5432), false},
		{"remote forward", wed0830, ActionPortForward, db, fwd(ForwardRemote, "127.0.0.1", 5432), false},
		{"forward on another target", wed0830, ActionPortForward, pg, fwd(ForwardLocal, "127.0.0.1", 5432), false},
		{"forward without a destination", wed0830, ActionPortForward, db, Context{Via: ViaSSH}, false},
		{"connect without a destination", wed0830, ActionConnect, db, Context{Via: ViaSSH}, false},
		{"forward via extra", wed0830, ActionPortForward, db, extra(json.Number("5432")), true},
		{"forward via extra, float port", wed0830, ActionPortForward, db, extra(5432.0), true},
		{"forward via extra, another port", wed0830, ActionPortForward, db, extra(json.Number("22")), false},
		{"date in zone", tue2330, ActionReadSecret, UID{TypeSecret, "s"}, Context{}, true},
		{"date in zone, other day", wed0730.Add(24 * time.Hour), ActionReadSecret, UID{TypeSecret, "s"}, Context{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.clk.Set(tc.now)
			d, err := e.az.Check(context.Background(), Request{Principal: user("alice"), Action: tc.action, Resource: tc.res, Context: tc.ctx})
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tc.allow || len(d.Errors) > 0 {
				t.Errorf("%+v, want allow=%v", d, tc.allow)
			}
		})
	}
}

func TestContextRecord(t *testing.T) {
	m, err := newModel()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	tokyo := time.FixedZone("JST", 9*3600)
	for _, tc := range []struct {
		name string
		ctx  Context
		want string
	}{
		{"zero", Context{}, `{"mfa":false,"mfa_age_seconds":2147483648,"source_ip":{"__extn":{"fn":"ip","arg":"0.0.0.0"}},"time":{"date":"2026-01-03","hour":0,"minute":4,"weekday":"sat"},"via":"api"}`},
		{"full", Context{MFA: true, MFAAt: now.Add(-90 * time.Second), SourceIP: netip.MustParseAddr("fe80::1%eth0"), Via: ViaDB, Ticket: "T", Reason: "R"},
			`{"mfa":true,"mfa_age_seconds":90,"reason":"R","source_ip":{"__extn":{"fn":"ip","arg":"fe80::1"}},"ticket":"T","time":{"date":"2026-01-03","hour":0,"minute":4,"weekday":"sat"},"via":"db"}`},
		{"forward", Context{Forward: &Forward{Direction: ForwardRemote, Host: "DB.Example.COM", Port: 0}}, `"forward":{"direction":"remote","host":"db.example.com","port":0}`},
		{"forward host not utf-8", Context{Forward: &Forward{Direction: ForwardLocal, Host: "\xffÄ-X", Port: 65535}}, `"forward":{"direction":"local","host":"` + "\uFFFD" + `Ä-x","port":65535}`},
		{"mfa in the future", Context{MFA: true, MFAAt: now.Add(time.Minute)}, `"mfa_age_seconds":0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := m.record(tc.ctx, now, timeRecord(now.In(tokyo)))
			if err != nil {
				t.Fatal(err)
			}
			b, err := r.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b); got != tc.want && !(strings.HasPrefix(tc.want, `"`) && strings.Contains(got, tc.want)) {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// A context the schema does not allow is refused, not evaluated.
func TestContextRefused(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), Config{})
	for _, tc := range []struct {
		name string
		ctx  Context
		msg  string
	}{
		{"forward direction", Context{Forward: &Forward{Direction: "sideways", Host: "h", Port: 1}}, "not local or remote"},
		{"forward port as a string", Context{Extra: map[string]any{"forward": map[string]any{"direction": "local", "host": "h", "port": "22"}}}, "schema"},
		{"forward without port", Context{Extra: map[string]any{"forward": map[string]any{"direction": "local", "host": "h"}}}, "schema"},
		{"forward port fraction", Context{Extra: map[string]any{"forward": map[string]any{"direction": "local", "host": "h", "port": 22.5}}}, "not an integer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.az.Check(context.Background(), Request{Principal: user("alice"), Action: ActionPortForward, Resource: account("pg/root"), Context: tc.ctx})
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Check: %v; want Invalid with %q", err, tc.msg)
			}
		})
	}
}
