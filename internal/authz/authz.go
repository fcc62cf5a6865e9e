// Package authz makes every access decision in Warder: may this principal
// do this action on this resource, in this context?
//
// Decisions are made by Cedar policies (https://docs.cedarpolicy.com)
// written against the schema in schema.cedarschema, with Cedar's semantics:
// deny unless some permit matches; any matching forbid overrides every
// permit; a policy whose evaluation errors is skipped (and reported). The
// entities of a request come from an EntityResolver; the context is computed
// from Context (see there).
//
// Policies are stored in the database under names, each holding one or
// more statements; they are validated against the schema before they are
// stored. A new database gets one built-in policy, "admins", which lets
// members of Group::"admins" do everything; nothing else is allowed until
// granted.
//
// Authorize, the decision a capability acts on, writes every decision to the
// audit log and fails closed if it cannot. Check evaluates without auditing.
//
// # Several servers
//
// Servers sharing a PostgreSQL database see each other's policy changes:
// every change increments a version counter in the database, and an
// Authorizer compares it with the version it loaded at most once per
// Config.ReloadInterval, during a Check or Authorize, reloading the
// policies when it changed. A change made through an Authorizer is seen by
// that Authorizer at once. If the checks keep failing for longer than
// Config.FailClosedAfter, Check and Authorize fail closed
// (errkind.Unavailable) until one succeeds: a server cut off from the
// database must not go on applying policies that may have been tightened.
package authz

import (
	"context"
	"io"
	"iter"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Config configures an Authorizer. New does not modify it.
type Config struct {
	// DB stores the policies. Required.
	DB *store.DB
	// Audit receives a record of every decision Authorize makes and every
	// policy change. Required.
	Audit *audit.Log
	// Entities resolves the parents (and optionally attributes) of
	// principals and resources. Required.
	Entities EntityResolver
	// Logger receives operational logs. Nil: discard.
	Logger *slog.Logger
	// Now is the clock, for context.time, MFA age and reload pacing.
	// Nil: time.Now.
	Now func() time.Time
	// Location is the zone of context.time. Nil: UTC.
	Location *time.Location
	// ReloadInterval is the least time between two checks of the database
	// for policy changes made by other servers. Zero: 1 second.
	ReloadInterval time.Duration
	// FailClosedAfter is how long Check and Authorize go on deciding with
	// the policies loaded while checks of the database for changes keep
	// failing (a forbid added by another server would not apply); after
	// that they return errkind.Unavailable until a check succeeds. Zero:
	// 10 × ReloadInterval.
	FailClosedAfter time.Duration
}

// Request asks whether Principal may do Action on Resource.
type Request struct {
	Principal UID    // User or Machine
	Action    string // an Action constant: "checkout"
	Resource  UID
	Context   Context
	// Details are recorded in the audit event of Authorize besides its own,
	// to tell apart requests that are otherwise alike: the API passes
	// {"method": "DELETE", "path": "/v1/users/{name}"} (the route pattern).
	// At most 8; each key matches ^[a-z][a-z0-9_]{0,31}$ and is not one of
	// the event's own (action, principal, policies, via, errors), else
	// Authorize fails with errkind.Invalid; each value is clipped to 256
	// bytes on a character boundary, invalid UTF-8 and control characters
	// replaced by U+FFFD. Never a secret. Nil: none. Check ignores them.
	Details map[string]string
}

// Decision is the answer to a Request.
type Decision struct {
	Allow    bool   `json:"-"`
	Decision string `json:"decision"` // "allow" or "deny"
	// Policies holds the ids of the policies that determined the decision,
	// sorted: the permits that matched when allowed, the forbids that
	// matched when denied by a forbid; empty (never nil) when denied because
	// nothing permitted.
	Policies []string `json:"policies"`
	// Errors holds "id: message" for each policy whose evaluation failed;
	// such a policy is skipped.
	Errors []string `json:"errors,omitempty"`
	// NotAfter is set when the decision allows only through grant
	// policies (just-in-time grants): the latest of their expiries, the
	// first instant at which the same request would no longer be allowed
	// by them. Zero when a policy without expiry allowed, or on deny. A
	// gateway ends a session at NotAfter; revocations before it are seen
	// by checking again.
	NotAfter time.Time `json:"not_after,omitzero"`
}

// deny is the Decision returned with an error.
func deny() Decision { return Decision{Decision: "deny", Policies: []string{}} }

// Authorizer evaluates requests against the stored policies. It is safe for
// concurrent use.
type Authorizer struct {
	db       *store.DB
	audit    *audit.Log
	resolver EntityResolver
	logger   *slog.Logger
	now      func() time.Time
	loc      *time.Location
	interval time.Duration
	closeAft time.Duration // Config.FailClosedAfter, defaulted
	model    *model

	set       atomic.Pointer[policySet]    // the policies in force; replaced whole by Reload
	lastCheck atomic.Int64                 // a.now() in Unix ns of the last version check
	loadMu    sync.Mutex                   // serialises load, so sets replace each other in version order
	minute    atomic.Pointer[minuteRecord] // context.time of the latest minute asked for
	// failingSince is a.now() in Unix ns of the first failed Reload since
	// the last one that succeeded; 0 while they succeed.
	failingSince atomic.Int64
}

// minuteRecord is context.time for the minute starting at unix (seconds).
type minuteRecord struct {
	unix int64
	rec  types.Record
}

// timeRecord returns context.time for now, reusing the record of the
// minute last asked for: it changes once a minute.
func (a *Authorizer) timeRecord(now time.Time) types.Record {
	t := now.In(a.loc)
	_, off := t.Zone()
	// Minutes of local time: zone offsets are whole minutes since 1972.
	key := (t.Unix() + int64(off)) / 60
	if m := a.minute.Load(); m != nil && m.unix == key {
		return m.rec
	}
	rec := timeRecord(t)
	a.minute.Store(&minuteRecord{unix: key, rec: rec})
	return rec
}

// policySet is an immutable snapshot of the stored policies.
type policySet struct {
	version int64                // the database's version counter when read
	files   map[string]storedSet // by policy name
	grants  map[string]storedSet // grant policies by id (see LinkTx)
	all     []compiled           // every statement and grant, for evaluating without the index
	index   index
}

// expiry is when the policy id stops applying, in µs since the epoch: a
// grant policy's expiry, 0 for a stored policy (or an unknown id).
func (s *policySet) expiry(id cedar.PolicyID) int64 {
	g, ok := s.grants[string(id)]
	if !ok {
		return 0
	}
	for _, c := range g.policies {
		if c.id == id {
			return c.expires
		}
	}
	return 0
}

type storedSet struct {
	version  int64 // the row's version
	policies []compiled
}

// New migrates the policy table, installs the built-in policies in an empty
// database and loads the policies.
func New(ctx context.Context, cfg Config) (*Authorizer, error) {
	switch {
	case cfg.DB == nil:
		return nil, errkind.New(errkind.Invalid, "authz: no database configured")
	case cfg.Audit == nil:
		return nil, errkind.New(errkind.Invalid, "authz: no audit log configured")
	case cfg.Entities == nil:
		return nil, errkind.New(errkind.Invalid, "authz: no entity resolver configured")
	case cfg.ReloadInterval < 0 || cfg.FailClosedAfter < 0:
		return nil, errkind.New(errkind.Invalid, "authz: negative reload interval")
	}
	m, err := newModel()
	if err != nil {
		return nil, err
	}
	a := &Authorizer{
		db: cfg.DB, audit: cfg.Audit, resolver: cfg.Entities, logger: cfg.Logger,
		now: cfg.Now, loc: cfg.Location, interval: cfg.ReloadInterval, closeAft: cfg.FailClosedAfter, model: m,
	}
	if a.logger == nil {
		a.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.loc == nil {
		a.loc = time.UTC
	}
	if a.interval == 0 {
		a.interval = time.Second
	}
	if a.closeAft == 0 {
		a.closeAft = 10 * a.interval
	}
	if err := a.migrate(ctx); err != nil {
		return nil, err
	}
	if err := a.installDefaults(ctx); err != nil {
		return nil, err
	}
	if err := a.Reload(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Check evaluates req without auditing it: for `warder policy check`, whose
// caller audits the call itself. An error (errkind.Invalid for a request
// the schema does not admit; the resolver's error) comes with a deny.
func (a *Authorizer) Check(ctx context.Context, req Request) (Decision, error) {
	s, err := a.current(ctx)
	if err != nil {
		return deny(), err
	}
	return a.evaluate(ctx, req, s, false)
}

// Authorize evaluates req and writes the decision to the audit log (action
// "authz.decide", resource req.Resource, outcome allow or deny, details
// action, principal, via and the deciding policy ids, plus req.Details). It returns an
// allowing Decision only once the event is committed: if the audit log
// cannot take it, the error is errkind.Unavailable and the Decision denies.
// Evaluation errors, and policies that could not be reloaded for too
// long, are returned as by Check, unaudited.
func (a *Authorizer) Authorize(ctx context.Context, o audit.Origin, req Request) (Decision, error) {
	extra, err := requestDetails(req.Details)
	if err != nil {
		return deny(), err
	}
	s, err := a.current(ctx)
	if err != nil {
		return deny(), err
	}
	d, err := a.evaluate(ctx, req, s, false)
	if err != nil {
		return d, err
	}
	outcome := audit.OutcomeDeny
	if d.Allow {
		outcome = audit.OutcomeAllow
	}
	via := req.Context.Via
	if via == "" {
		via = ViaAPI
	}
	details := map[string]string{
		"action":    req.Action,
		"principal": req.Principal.String(),
		"policies":  joinClipped(d.Policies, audit.MaxFieldBytes),
		"via":       via,
	}
	if len(d.Errors) > 0 {
		details["errors"] = strconv.Itoa(len(d.Errors))
	}
	maps.Copy(details, extra)
	if _, err := a.audit.Append(ctx, o.Event("authz.decide", req.Resource.String(), outcome, details)); err != nil {
		return deny(), errkind.New(errkind.Unavailable, "authz: audit decision: %w", err)
	}
	return d, nil
}

// evaluate decides req against s; full evaluates every policy instead of
// the index's candidates (for tests).
func (a *Authorizer) evaluate(ctx context.Context, req Request, s *policySet, full bool) (Decision, error) {
	act, err := a.model.checkRequest(req)
	if err != nil {
		return deny(), err
	}
	now := a.now()
	rec, err := a.model.record(req.Context, now, a.timeRecord(now))
	if err != nil {
		return deny(), err
	}
	ents := &entities{r: a.resolver}
	pAll, err := ents.load(ctx, 0, req.Principal)
	if err != nil {
		return deny(), err
	}
	rAll, err := ents.load(ctx, 1, req.Resource)
	if err != nil {
		return deny(), err
	}
	creq := cedar.Request{Principal: pAll[0], Action: act.uid, Resource: rAll[0], Context: rec}
	// Grant policies past their expiry are skipped from the very
	// microsecond they expire, whether or not they were unlinked yet.
	nowUS := now.UnixMicro()
	var policies cedar.PolicyIterator = s.index.candidates(act.uid, pAll, rAll, nowUS)
	if full {
		policies = fullSet{ps: s.all, now: nowUS}
	}
	dec, diag := cedar.Authorize(policies, ents, creq)
	d := Decision{Allow: dec == cedar.Allow, Decision: "deny", Policies: make([]string, 0, len(diag.Reasons))}
	if d.Allow {
		d.Decision = "allow"
	}
	bounded := d.Allow
	var notAfter int64
	for _, r := range diag.Reasons {
		d.Policies = append(d.Policies, string(r.PolicyID))
		exp := s.expiry(r.PolicyID)
		if exp == 0 {
			bounded = false
		}
		notAfter = max(notAfter, exp)
	}
	if bounded && notAfter > 0 {
		d.NotAfter = time.UnixMicro(notAfter)
	}
	for _, e := range diag.Errors {
		d.Errors = append(d.Errors, string(e.PolicyID)+": "+e.Message)
	}
	slices.Sort(d.Policies)
	slices.Sort(d.Errors)
	return d, nil
}

// fullSet iterates over every policy in force at now (µs).
type fullSet struct {
	ps  []compiled
	now int64
}

func (f fullSet) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, c := range f.ps {
			if c.live(f.now) && !yield(c.id, c.policy) {
				return
			}
		}
	}
}

// current returns the policies in force after maybeReload, or an
// errkind.Unavailable error once reloads have kept failing for longer than
// FailClosedAfter: a change made by another server, perhaps a forbid,
// might be missing from them.
func (a *Authorizer) current(ctx context.Context) (*policySet, error) {
	a.maybeReload(ctx)
	if since := a.failingSince.Load(); since != 0 && a.now().UnixNano()-since > int64(a.closeAft) {
		return nil, errkind.New(errkind.Unavailable, "authz: policies could not be reloaded since %s",
			time.Unix(0, since).UTC().Format(time.RFC3339))
	}
	return a.set.Load(), nil
}

// maybeReload checks the database's policy version if ReloadInterval has
// passed since the last check, and reloads when it changed. One caller at a
// time checks; the others go on with the policies in force. A failure is
// logged and the policies in force stay, for FailClosedAfter at most (see
// current); the next check retries.
func (a *Authorizer) maybeReload(ctx context.Context) {
	now := a.now().UnixNano()
	last := a.lastCheck.Load()
	if now-last < int64(a.interval) && now >= last {
		return
	}
	if !a.lastCheck.CompareAndSwap(last, now) {
		return
	}
	if err := a.Reload(ctx); err != nil {
		a.logger.Warn("authz: policy reload failed; keeping the loaded policies for now", "err", err,
			"failing_since", time.Unix(0, a.failingSince.Load()).UTC())
	}
}

// Bounds of Request.Details.
const (
	maxDetails     = 8
	maxDetailValue = 256
)

var detailKeyPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// requestDetails checks and cleans Request.Details for the audit event.
func requestDetails(in map[string]string) (map[string]string, error) {
	if len(in) > maxDetails {
		return nil, errkind.New(errkind.Invalid, "authz: %d request details, more than %d", len(in), maxDetails)
	}
	out := make(map[string]string, len(in))
	for k, v := range in {
		switch k {
		case "action", "principal", "policies", "via", "errors":
			return nil, errkind.New(errkind.Invalid, "authz: request detail %q is a detail of the decision itself", k)
		}
		if !detailKeyPattern.MatchString(k) {
			return nil, errkind.New(errkind.Invalid, "authz: request detail key %q does not match %s", clip(k), detailKeyPattern)
		}
		out[k] = cleanText(v, maxDetailValue)
	}
	return out, nil
}

// cleanText returns s with invalid UTF-8 and control characters replaced
// by U+FFFD, clipped to at most limit bytes without splitting a character.
func cleanText(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
	return clipBytes(s, limit)
}

// clipBytes returns the longest prefix of s of at most limit bytes that
// does not split a UTF-8 sequence.
func clipBytes(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// joinClipped joins ids with commas into at most limit bytes, ending with
// "...(+N)" when some are left out.
func joinClipped(ids []string, limit int) string {
	s := strings.Join(ids, ",")
	if len(s) <= limit {
		return s
	}
	var b strings.Builder
	for i, id := range ids {
		tail := "...(+" + strconv.Itoa(len(ids)-i) + ")"
		if b.Len()+len(id)+1+len(tail)+16 > limit {
			b.WriteString(tail)
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(id)
	}
	return b.String()
}
