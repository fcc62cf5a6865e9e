package server

import (
	"context"
	"slices"
	"strings"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/recording"
	"github.com/warderhq/warder/internal/vault"
)

// lifecycleOrigin is the actor of what the server does when a principal
// stops being usable.
var lifecycleOrigin = audit.Origin{Actor: "system:lifecycle"}

// onLifecycle ends the live gateway sessions, leases and grants of a
// principal that was disabled or deleted. It runs after the identity
// change committed; a crash before it finishes is repaired by
// reconcileHolders at the next start (sessions end with the process).
func (s *Server) onLifecycle(ctx context.Context, ev identity.LifecycleEvent) {
	ctx = context.WithoutCancel(ctx)
	if s.recorder != nil {
		msg := "your Warder account was disabled"
		if ev.Kind == identity.EventUserDeleted || ev.Kind == identity.EventMachineDeleted {
			msg = "your Warder account was deleted"
		}
		ids, err := s.recorder.KillPrincipal(ctx, lifecycleOrigin, ev.Principal.Actor(), msg)
		if err != nil {
			s.logger.Error("end sessions of a disabled principal", "principal", ev.Principal.Actor(), "event", ev.Kind, "ended", len(ids), "err", err)
		} else if len(ids) > 0 {
			s.logger.Info("ended the live sessions of a disabled principal", "principal", ev.Principal.Actor(), "event", ev.Kind, "sessions", len(ids))
		}
	}
	if _, err := s.vault.EndLeasesOf(ctx, lifecycleOrigin, ev.Principal); err != nil {
		s.logger.Error("end leases of a disabled principal", "principal", ev.Principal.Actor(), "event", ev.Kind, "err", err)
	}
	if _, err := s.access.EndGrantsOf(ctx, lifecycleOrigin, ev.Principal); err != nil {
		s.logger.Error("end grants of a disabled principal", "principal", ev.Principal.Actor(), "event", ev.Kind, "err", err)
	}
}

// reconcileHolders ends every active lease and grant whose holder is no
// longer an active principal: the lifecycle hook runs in memory after its
// change committed, so a crash in between would otherwise leave the lease
// (and the credential it showed) or the grant alive until it expires.
func (s *Server) reconcileHolders(ctx context.Context) {
	var holders []string
	ll, err := s.vault.Leases(ctx, "")
	if err != nil {
		s.logger.Warn("reconcile lease holders", "err", err)
	}
	for _, l := range ll.Leases {
		holders = append(holders, l.Holder)
	}
	gs, err := s.access.Grants(ctx, access.GrantFilter{Active: true})
	if err != nil {
		s.logger.Warn("reconcile grant holders", "err", err)
	}
	for _, g := range gs {
		holders = append(holders, g.Principal.Actor())
	}
	seen := map[string]bool{}
	for _, h := range holders {
		if seen[h] {
			continue
		}
		seen[h] = true
		p, ok := parseActor(h)
		if !ok {
			continue
		}
		active, err := s.principalActive(ctx, p)
		if err != nil {
			s.logger.Warn("reconcile holder", "holder", h, "err", err)
			continue
		}
		if !active {
			s.onLifecycle(ctx, identity.LifecycleEvent{Kind: "reconcile", Principal: p})
		}
	}
}

func parseActor(actor string) (identity.Principal, bool) {
	kind, name, ok := strings.Cut(actor, ":")
	switch {
	case !ok:
		return identity.Principal{}, false
	case kind == string(identity.KindUser):
		return identity.Principal{Kind: identity.KindUser, Name: name}, true
	case kind == string(identity.KindMachine):
		return identity.Principal{Kind: identity.KindMachine, Name: name}, true
	}
	return identity.Principal{}, false
}

func (s *Server) principalActive(ctx context.Context, p identity.Principal) (bool, error) {
	var err error
	if p.Kind == identity.KindMachine {
		var m identity.Machine
		m, err = s.identity.Machine(ctx, p.Name)
		if err == nil {
			return m.Status == identity.StatusActive, nil
		}
	} else {
		var u identity.User
		u, err = s.identity.User(ctx, p.Name)
		if err == nil {
			return u.Status == identity.StatusActive, nil
		}
	}
	if errkind.Is(err, errkind.NotFound) {
		return false, nil
	}
	return err == nil, err
}

// parseWebhooks reads notify_webhooks: comma-separated URLs, each
// optionally prefixed "json:" or "slack:".
func parseWebhooks(list, secret string) ([]access.Webhook, error) {
	var out []access.Webhook
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kind := "json"
		for _, k := range []string{"json:", "slack:"} {
			if strings.HasPrefix(item, k) {
				kind, item = strings.TrimSuffix(k, ":"), strings.TrimPrefix(item, k)
			}
		}
		out = append(out, access.Webhook{URL: item, Kind: kind, Secret: secret})
	}
	return out, nil
}

// endLeaseSessions ends the live gateway sessions that use a lease of
// account that is no longer open: an administrator's forced check-in, or
// the holder checking in through the API while a session still used the
// lease. The vault calls it whenever a lease of account ends; the
// gateways' own check-ins come after their sessions ended, so they find
// none.
func (s *Server) endLeaseSessions(ctx context.Context, account, reason string) {
	if s.recorder == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	// The gateways record the account as "target/user".
	active, err := s.recorder.List(ctx, recording.Filter{Account: account, Active: true, Limit: 1000})
	if err != nil {
		s.logger.Error("end sessions of an ended lease", "account", account, "err", err)
		return
	}
	var using []string
	for _, i := range active {
		if i.LeaseID != "" && !slices.Contains(using, i.LeaseID) {
			using = append(using, i.LeaseID)
		}
	}
	if len(using) == 0 {
		return
	}
	open, err := s.vault.Leases(ctx, account)
	if err != nil {
		s.logger.Error("end sessions of an ended lease", "account", account, "err", err)
		return
	}
	for _, id := range using {
		if slices.ContainsFunc(open.Leases, func(l vault.Lease) bool { return l.ID == id }) {
			continue
		}
		ids, err := s.recorder.KillLease(ctx, lifecycleOrigin, id, "the check-out of "+account+" ended ("+reason+")")
		if err != nil {
			s.logger.Error("end sessions of an ended lease", "account", account, "lease", id, "err", err)
		} else if len(ids) > 0 {
			s.logger.Info("ended the live sessions of an ended lease", "account", account, "lease", id, "reason", reason, "sessions", len(ids))
		}
	}
}
