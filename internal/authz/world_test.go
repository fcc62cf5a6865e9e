package authz

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"
)

// world is a generated population of principals, resources and policies,
// for the equivalence test and the benchmark.
type world struct {
	users, groups, machines, targets, accounts int
	res                                        *memResolver
	policies                                   map[string]string // name -> text
	rng                                        *rand.Rand
	members                                    map[int][]int // group -> users directly in it
	grants                                     []grant       // of the group-scoped permits
}

// grant is what a group-scoped permit grants.
type grant struct {
	group, target int
	action        string
}

// newWorld builds a world: groups nested three deep (gN is in g(N/10)),
// each user in three random groups, each machine in one, accounts spread
// over targets, and about npol policies in a realistic mix: group-scoped
// permits on targets with MFA, time, IP and ticket conditions, forbids,
// per-user grants, resource-scoped and unscoped policies, and a few that
// fail at evaluation (integer overflow).
func newWorld(seed uint64, users, groups, machines, targets, accounts, npol int) *world {
	w := &world{users: users, groups: groups, machines: machines, targets: targets, accounts: accounts,
		res: newMemResolver(), policies: map[string]string{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		members: map[int][]int{}}
	for i := 10; i < groups; i++ {
		w.res.add(w.group(i), w.group(i/10))
	}
	for i := range users {
		for range 3 {
			g := w.rng.IntN(groups)
			w.res.add(w.user(i), w.group(g))
			w.members[g] = append(w.members[g], i)
		}
	}
	for i := range machines {
		w.res.add(UID{TypeMachine, fmt.Sprint("m", i)}, w.group(w.rng.IntN(groups)))
	}
	for i := range accounts {
		w.res.add(w.account(i), w.target(i%targets))
	}
	for i := range targets {
		w.res.add(UID{TypeSecret, fmt.Sprint("s", i)}, w.target(i))
	}
	conds := []string{
		`context.mfa && context.mfa_age_seconds < 600`,
		`context.source_ip.isInRange(ip("10.0.0.0/8"))`,
		`["mon","tue","wed","thu","fri"].contains(context.time.weekday) && context.time.hour >= 8 && context.time.hour < 18`,
		`context has ticket`,
		`context.mfa && context.source_ip.isInRange(ip("10.0.0.0/8")) && context has ticket`,
		`context.via == "ssh"`,
		`true`,
	}
	acts := []string{ActionCheckout, ActionCheckin, ActionRotate, ActionConnect}
	pick := func(s []string) string { return s[w.rng.IntN(len(s))] }
	for i := range npol {
		gi, ti := w.rng.IntN(groups), w.rng.IntN(targets)
		g, tg := w.group(gi), w.target(ti)
		var text string
		switch r := i % 50; {
		case r < 30: // group-scoped permit on a target
			act := pick(acts)
			w.grants = append(w.grants, grant{gi, ti, act})
			text = fmt.Sprintf(`permit(principal in %s, action == Action::"%s", resource in %s) when { %s };`, g, act, tg, pick(conds))
		case r < 33: // several actions
			text = fmt.Sprintf(`permit(principal in %s, action in [Action::"checkout", Action::"checkin"], resource in %s) when { %s };`, g, tg, pick(conds))
		case r < 38: // forbid
			text = fmt.Sprintf(`forbid(principal in %s, action, resource in %s) unless { %s };`, g, tg, pick(conds))
		case r < 45: // per-user grant
			text = fmt.Sprintf(`permit(principal == %s, action == Action::"%s", resource == %s);`, w.user(w.rng.IntN(users)), pick(acts), w.account(w.rng.IntN(accounts)))
		case r < 47: // resource-scoped
			text = fmt.Sprintf(`permit(principal, action == Action::"read_secret", resource in %s) when { principal in %s && %s };`, tg, g, pick(conds))
		case r < 49: // unscoped
			text = fmt.Sprintf(`permit(principal, action == Action::"%s", resource) when { principal in %s && resource in %s && %s };`, pick(acts), g, tg, pick(conds))
		default: // errors at evaluation when MFA age is positive
			text = fmt.Sprintf(`forbid(principal in %s, action, resource) when { context.mfa_age_seconds + 9223372036854775807 > 0 };`, g)
		}
		w.policies[fmt.Sprintf("p%04d", i)] = text
	}
	return w
}

func (w *world) user(i int) UID    { return UID{TypeUser, fmt.Sprint("u", i)} }
func (w *world) group(i int) UID   { return UID{TypeGroup, fmt.Sprint("g", i)} }
func (w *world) target(i int) UID  { return UID{TypeTarget, fmt.Sprint("t", i)} }
func (w *world) account(i int) UID { return UID{TypeAccount, fmt.Sprint("a", i)} }

// request returns a random request at now. Half of them aim at a grant:
// a member of the granted group asks for the granted action on an account
// of the granted target (conditions and forbids decide).
func (w *world) request(now time.Time) Request {
	var req Request
	if len(w.grants) > 0 && w.rng.IntN(2) == 0 {
		g := w.grants[w.rng.IntN(len(w.grants))]
		req.Principal, req.Action = w.user(w.rng.IntN(w.users)), g.action
		if m := w.members[g.group]; len(m) > 0 {
			req.Principal = w.user(m[w.rng.IntN(len(m))])
		}
		req.Resource = w.account(g.target + w.targets*w.rng.IntN(w.accounts/w.targets))
		w.context(&req.Context, now)
		return req
	}
	if w.rng.IntN(20) == 0 && w.machines > 0 {
		req.Principal = UID{TypeMachine, fmt.Sprint("m", w.rng.IntN(w.machines))}
	} else {
		req.Principal = w.user(w.rng.IntN(w.users))
	}
	switch r := w.rng.IntN(10); {
	case r < 6:
		req.Action = []string{ActionCheckout, ActionCheckin, ActionRotate, ActionConnect}[w.rng.IntN(4)]
		req.Resource = w.account(w.rng.IntN(w.accounts))
	case r < 8:
		req.Action = []string{ActionCheckout, ActionConnect}[w.rng.IntN(2)]
		req.Resource = w.target(w.rng.IntN(w.targets))
	default:
		req.Action = ActionReadSecret
		req.Resource = UID{TypeSecret, fmt.Sprint("s", w.rng.IntN(w.targets))}
	}
	w.context(&req.Context, now)
	return req
}

// context fills c at random.
func (w *world) context(c *Context, now time.Time) {
	c.MFA = w.rng.IntN(2) == 0
	if c.MFA {
		c.MFAAt = now.Add(-time.Duration(w.rng.IntN(1200)) * time.Second)
	}
	if w.rng.IntN(2) == 0 {
		c.SourceIP = netip.AddrFrom4([4]byte{10, byte(w.rng.IntN(256)), 0, 1})
	} else {
		c.SourceIP = netip.AddrFrom4([4]byte{192, 168, 0, byte(w.rng.IntN(256))})
	}
	if w.rng.IntN(2) == 0 {
		c.Ticket = "CHG-1"
	}
	c.Via = []string{ViaAPI, ViaSSH, ViaDB}[w.rng.IntN(3)]
}
