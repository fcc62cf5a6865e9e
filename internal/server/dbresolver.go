package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/connector"
	pgconnector "github.com/warderhq/warder/internal/connector/postgres"
	"github.com/warderhq/warder/internal/errkind"
	pggw "github.com/warderhq/warder/internal/gateway/postgres"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// dbVault is what the database gateway's resolver needs of the vault;
// *vault.Vault implements it.
type dbVault interface {
	Target(ctx context.Context, name string) (vault.Target, error)
	Checkout(ctx context.Context, o audit.Origin, req vault.CheckoutRequest) (vault.Lease, error)
	Checkin(ctx context.Context, o audit.Origin, p identity.Principal, account string) (vault.Lease, error)
}

// dbGrants is what it needs of just-in-time access; *access.Access
// implements it.
type dbGrants interface {
	Grants(ctx context.Context, f access.GrantFilter) ([]access.Grant, error)
	RevealEphemeral(ctx context.Context, o audit.Origin, p identity.Principal, id string) (access.EphemeralCredential, error)
}

// dbCheckoutReason is the reason of a database session's implicit
// check-out, as the lease and its audit events show it.
const dbCheckoutReason = "database session through the gateway"

// dbResolver is the database gateway's Resolver. For ACCOUNT@TARGET it
// checks the account out of the vault for the connection (authorised by
// "connect", via db, without waiting) and checks it in when the
// connection ends, which rotates the credential if the account rotates on
// check-in. For TARGET alone it uses, in order: the database user of the
// principal's live just-in-time grant on the target (the latest to
// expire), else the target's default_account option, else it refuses,
// telling the client to name the account.
//
// The upstream TLS follows the target's sslmode option, as the connector
// reads it; the statement rules are the target's, compiled per
// connection, so that a connection sees the rules of when it opened.
type dbResolver struct {
	vault  dbVault
	grants dbGrants
	log    *slog.Logger
	// leases shares a principal's check-out among their concurrent
	// connections to an account (pgbench -c 8). Nil: each connection
	// checks out alone.
	leases *sessionLeases
}

var _ pggw.Resolver = dbResolver{}

// public is an error the client sees (pggw.PublicError) with the cause
// only logged.
func public(err error, format string, args ...any) error {
	return &pggw.PublicError{Message: fmt.Sprintf(format, args...), Err: err}
}

// Resolve returns where and as whom the gateway logs in for p.
func (r dbResolver) Resolve(ctx context.Context, p identity.Principal, target, account string, tok identity.Token) (pggw.Upstream, error) {
	o, ok := pggw.OriginFrom(ctx)
	if !ok {
		o = audit.Origin{Actor: p.Actor()}
	}
	t, err := r.vault.Target(ctx, target)
	if errkind.Is(err, errkind.NotFound) {
		return pggw.Upstream{}, public(err, "there is no target %q", target)
	}
	if err != nil {
		return pggw.Upstream{}, err
	}
	if t.Kind != pgconnector.Kind {
		return pggw.Upstream{}, public(nil, "target %q is a %s target, not postgres", target, t.Kind)
	}
	base, err := dbBase(t)
	if err != nil {
		return pggw.Upstream{}, err
	}
	if account == "" {
		up, found, err := r.ephemeral(ctx, o, p, t)
		if err != nil || found {
			if found {
				up = withBase(up, base)
			}
			return up, err
		}
		if account = t.Options[pgconnector.OptDefaultAccount]; account == "" {
			return pggw.Upstream{}, public(nil, "target %q has no default account and you hold no grant with a database user on it: connect as ACCOUNT@%s", target, target)
		}
	}
	up, err := r.checkout(ctx, o, p, tok, t, account)
	if err != nil {
		return pggw.Upstream{}, err
	}
	return withBase(up, base), nil
}

// checkout checks account out for the connection.
func (r dbResolver) checkout(ctx context.Context, o audit.Origin, p identity.Principal, tok identity.Token, t vault.Target, account string) (pggw.Upstream, error) {
	id := t.Name + "/" + account
	src, _ := netip.ParseAddr(o.Source)
	l, release, err := acquire(ctx, r.leases, r.vault, r.log, o, vault.CheckoutRequest{
		Account: id, Principal: p, Reason: dbCheckoutReason, Action: authz.ActionConnect,
		Context: authz.Context{Via: authz.ViaDB, MFA: tok.MFA, MFAAt: tok.MFAAt, SourceIP: src},
	})
	switch {
	case err == nil:
	case errkind.Is(err, errkind.NotFound):
		return pggw.Upstream{}, public(err, "there is no account %q on target %q", account, t.Name)
	case vault.Refusal(err) == vault.RefusedOutOfSync:
		return pggw.Upstream{}, public(err, "account %q of target %q is out of sync after a failed rotation: ask an administrator", account, t.Name)
	case slices.Contains([]string{vault.RefusedRotating, vault.RefusedRotationDue, vault.RefusedRotationTimeout}, vault.Refusal(err)):
		return pggw.Upstream{}, public(err, "account %q of target %q is being rotated: try again in a moment", account, t.Name)
	case errkind.Is(err, errkind.Conflict):
		return pggw.Upstream{}, public(err, "account %q of target %q is checked out to its limit: try again later", account, t.Name)
	case errkind.Is(err, errkind.Denied):
		return pggw.Upstream{}, public(err, "%s may not use account %q of target %q", p.Name, account, t.Name)
	default:
		return pggw.Upstream{}, err
	}
	c := l.Credential
	if c == nil || c.Kind != connector.Password || len(c.Secret) == 0 {
		release()
		kind := "no"
		if c != nil {
			kind = "a " + string(c.Kind)
		}
		return pggw.Upstream{}, fmt.Errorf("server: account %s has %s credential, not a password", id, kind)
	}
	return pggw.Upstream{
		User:     account,
		Password: c.Secret, // the gateway zeroes it once logged in
		NotAfter: l.ExpiresAt,
		LeaseID:  l.ID,
		Release:  release,
	}, nil
}

// ephemeral returns the login of p's live grant with a database user on
// t, the latest to expire; found is false when p holds none.
func (r dbResolver) ephemeral(ctx context.Context, o audit.Origin, p identity.Principal, t vault.Target) (up pggw.Upstream, found bool, err error) {
	gs, err := r.grants.Grants(ctx, access.GrantFilter{Principal: &p, Active: true})
	if err != nil {
		return pggw.Upstream{}, false, err
	}
	var best *access.Grant
	for i := range gs {
		g := &gs[i]
		if g.Ephemeral == nil || g.Ephemeral.Target != t.Name || g.Principal != p {
			continue
		}
		if best == nil || g.ExpiresAt.After(best.ExpiresAt) {
			best = g
		}
	}
	if best == nil {
		return pggw.Upstream{}, false, nil
	}
	cred, err := r.grants.RevealEphemeral(ctx, o, p, best.ID)
	switch {
	case err == nil:
	case errkind.Is(err, errkind.Unavailable):
		return pggw.Upstream{}, true, public(err, "the database user of your grant %s is not ready yet: try again shortly", best.ID)
	case errkind.Is(err, errkind.Conflict):
		return pggw.Upstream{}, true, public(err, "your grant %s has ended", best.ID)
	default:
		return pggw.Upstream{}, true, err
	}
	return pggw.Upstream{
		User:     cred.Username,
		Password: []byte(cred.Password),
		NotAfter: cred.ValidUntil,
		GrantID:  best.ID,
	}, true, nil
}

// dbBase is what every connection to t shares: the address, the
// database, the TLS settings and the rules.
func dbBase(t vault.Target) (pggw.Upstream, error) {
	tc, fallback, err := upstreamTLS(t)
	if err != nil {
		return pggw.Upstream{}, err
	}
	rules, err := gatewayRules(t.Rules)
	if err != nil {
		return pggw.Upstream{}, fmt.Errorf("server: target %q: %w", t.Name, err)
	}
	return pggw.Upstream{Host: t.Host, Port: t.Port, Database: t.Options[pgconnector.OptDatabase],
		TLS: tc, PlaintextFallback: fallback, Rules: rules}, nil
}

// withBase fills up's address, database, TLS and rules from base.
func withBase(up, base pggw.Upstream) pggw.Upstream {
	up.Host, up.Port, up.Database = base.Host, base.Port, base.Database
	up.TLS, up.PlaintextFallback, up.Rules = base.TLS, base.PlaintextFallback, base.Rules
	return up
}

// upstreamTLS returns the TLS configuration for t's sslmode option
// (default prefer), built by pgconn as for the connector, so that the
// gateway checks the server exactly as rotation does: disable is
// plaintext; allow and prefer try TLS without verification and fall back
// to plaintext (allow too tries TLS first: never less safe than prefer);
// require is TLS without verification (or, as libpq does, verify-ca when
// a root certificate is configured); verify-ca and verify-full verify the
// chain (and the host name), against PGSSLROOTCERT of the server process
// or the system roots.
func upstreamTLS(t vault.Target) (*tls.Config, bool, error) {
	mode := t.Options[pgconnector.OptSSLMode]
	if mode == "" {
		mode = "prefer"
	}
	if mode == "disable" {
		return nil, false, nil
	}
	cfg, err := pgconn.ParseConfig("host=" + quoteConnValue(t.Host) + " port=" + strconv.Itoa(t.Port) + " sslmode=" + quoteConnValue(mode))
	if err != nil {
		return nil, false, errkind.New(errkind.Invalid, "server: target %q: sslmode %q: %w", t.Name, mode, err)
	}
	tc := cfg.TLSConfig
	for _, fb := range cfg.Fallbacks {
		if tc == nil {
			tc = fb.TLSConfig
		}
	}
	if tc == nil {
		return nil, false, errkind.New(errkind.Invalid, "server: target %q: sslmode %q gives no TLS configuration", t.Name, mode)
	}
	return tc, mode == "allow" || mode == "prefer", nil
}

// quoteConnValue quotes v as a libpq keyword/value connection string
// value.
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// gatewayRules compiles a target's rules for the gateway. Nil when there
// are none.
func gatewayRules(rules []vault.Rule) ([]pggw.Rule, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	out := make([]pggw.Rule, 0, len(rules))
	for i, r := range rules {
		re, err := r.Compile()
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		out = append(out, pggw.Rule{Pattern: re, Action: r.Action, Message: r.Message})
	}
	return out, nil
}
