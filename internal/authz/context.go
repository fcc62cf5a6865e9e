package authz

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go/types"

	"github.com/warderhq/warder/internal/errkind"
)

// NoMFAAge is context.mfa_age_seconds when the request carries no MFA
// (2^31 seconds: larger than any bound a policy sets).
const NoMFAAge = 1 << 31

// The ways in, context.via.
const (
	ViaAPI = "api"
	ViaSSH = "ssh"
	ViaDB  = "db"
)

// The directions of a port forward, context.forward.direction.
const (
	ForwardLocal  = "local"  // ssh -L, -W: the target connects to Host:Port
	ForwardRemote = "remote" // ssh -R: the target listens on Host:Port
)

// Forward is the port forward a port_forward request asks for.
type Forward struct {
	Direction string // ForwardLocal or ForwardRemote
	// Host is the destination as the client named it, not resolved: a
	// name, an address, "localhost"; for a remote forward the address to
	// listen on ("" for all). A policy that allows one destination is
	// sound; one that forbids a destination is not, as the same machine
	// has many spellings (another name, its address, 127.1).
	Host string
	Port uint16 // for a remote forward 0 lets the target choose
}

// Context is what a request carries besides who, what and on which: the
// facts a policy's conditions test. Authz turns it into Cedar's context
// record (see schema.cedarschema):
//
//	mfa              MFA
//	mfa_age_seconds  whole seconds from MFAAt to now (0 if MFAAt is in the
//	                 future); NoMFAAge when MFA is false or MFAAt is zero
//	source_ip        SourceIP, unmapped from IPv4-in-IPv6 and without zone;
//	                 0.0.0.0 when SourceIP is invalid (unknown)
//	time             now in Config.Location: {hour, minute, weekday ("mon".."sun"), date ("2026-01-02")}
//	via              Via: "api" (the default when empty), "ssh" or "db"
//	ticket, reason   Ticket, Reason; absent when empty, so a policy can
//	                 require `context has ticket`
//	forward          Forward: {direction, host, port}, host with its ASCII
//	                 letters lower-cased (DNS names are case-insensitive)
//	                 and invalid UTF-8 replaced by U+FFFD; absent when nil. The SSH gateway sets it on port_forward.
type Context struct {
	MFA      bool
	MFAAt    time.Time  // when MFA was last presented; zero: no MFA
	SourceIP netip.Addr // the client address; invalid: unknown, 0.0.0.0 is used
	Via      string     // "api", "ssh" or "db"; "": "api"
	Ticket   string
	Reason   string
	Forward  *Forward // nil: not a port forward
	// Extra sets attributes of the context record directly, overriding
	// those computed from the fields above: for `warder policy check
	// --context` with JSON input. Keys must be attributes of the schema's
	// context and values must have its types; JSON values are accepted
	// (numbers as float64 or json.Number holding integers, objects as
	// map[string]any), and source_ip as a string ("10.1.2.3"); forward as
	// {"direction": "local", "host": "127.0.0.1", "port": 5432}, its host
	// taken as given.
	Extra map[string]any
}

// weekday names d as context.time.weekday does.
func weekday(d time.Weekday) string {
	return [...]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}[d]
}

// timeRecord returns context.time for t, in t's zone.
func timeRecord(t time.Time) types.Record {
	return types.NewRecord(types.RecordMap{
		"hour":    types.Long(t.Hour()),
		"minute":  types.Long(t.Minute()),
		"weekday": types.String(weekday(t.Weekday())),
		"date":    types.String(t.Format(time.DateOnly)),
	})
}

// record builds the Cedar context for c at now; tr is context.time.
func (m *model) record(c Context, now time.Time, tr types.Record) (types.Record, error) {
	via := c.Via
	switch via {
	case "":
		via = ViaAPI
	case ViaAPI, ViaSSH, ViaDB:
	default:
		return types.Record{}, errkind.New(errkind.Invalid, "authz: via %q is not api, ssh or db", clip(via))
	}
	age := int64(NoMFAAge)
	if c.MFA && !c.MFAAt.IsZero() {
		age = max(0, int64(now.Sub(c.MFAAt)/time.Second))
	}
	ip := c.SourceIP.Unmap().WithZone("")
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
	}
	rec := types.RecordMap{
		"mfa":             types.Boolean(c.MFA),
		"mfa_age_seconds": types.Long(age),
		"source_ip":       types.IPAddr(netip.PrefixFrom(ip, ip.BitLen())),
		"time":            tr,
		"via":             types.String(via),
	}
	if c.Ticket != "" {
		rec["ticket"] = types.String(c.Ticket)
	}
	if c.Reason != "" {
		rec["reason"] = types.String(c.Reason)
	}
	if f := c.Forward; f != nil {
		if f.Direction != ForwardLocal && f.Direction != ForwardRemote {
			return types.Record{}, errkind.New(errkind.Invalid, "authz: forward direction %q is not local or remote", clip(f.Direction))
		}
		rec["forward"] = types.NewRecord(types.RecordMap{
			"direction": types.String(f.Direction),
			"host":      types.String(forwardHost(f.Host)),
			"port":      types.Long(f.Port),
		})
	}
	if len(c.Extra) == 0 {
		return types.NewRecord(rec), nil
	}
	for k, v := range c.Extra {
		if _, ok := m.context[types.String(k)]; !ok {
			return types.Record{}, errkind.New(errkind.Invalid, "authz: context attribute %q is not in the schema", clip(k))
		}
		cv, err := toValue(v, k == "source_ip", 0)
		if err != nil {
			return types.Record{}, errkind.New(errkind.Invalid, "authz: context attribute %q: %w", k, err)
		}
		rec[types.String(k)] = cv
	}
	r := types.NewRecord(rec)
	// The validator checks the record against the schema's context type.
	a := m.actions[ActionAdmin]
	req := types.Request{Principal: types.NewEntityUID(TypeUser, "x"), Action: a.uid, Resource: SystemUID().cedar(), Context: r}
	if err := m.validator.Request(req); err != nil {
		return types.Record{}, errkind.New(errkind.Invalid, "authz: context does not match the schema: %w", err)
	}
	return r, nil
}

// forwardHost returns s with its ASCII letters lower-cased and invalid
// UTF-8 replaced by U+FFFD, as context.forward.host.
func forwardHost(s string) string {
	b := []byte(strings.ToValidUTF8(s, "\uFFFD"))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// toValue converts a JSON-like Go value to a Cedar value. ip says a string
// is an IP address.
func toValue(v any, ip bool, depth int) (types.Value, error) {
	if depth > 8 {
		return nil, fmt.Errorf("nested too deep")
	}
	switch v := v.(type) {
	case bool:
		return types.Boolean(v), nil
	case string:
		if ip {
			a, err := types.ParseIPAddr(v)
			if err != nil {
				return nil, err
			}
			return a, nil
		}
		return types.String(v), nil
	case int:
		return types.Long(v), nil
	case int64:
		return types.Long(v), nil
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return nil, fmt.Errorf("%v is not an integer", v)
		}
		return types.Long(int64(v)), nil
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return nil, fmt.Errorf("%v is not an integer", v)
		}
		return types.Long(n), nil
	case map[string]any:
		rec := types.RecordMap{}
		for k, e := range v {
			cv, err := toValue(e, false, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			rec[types.String(k)] = cv
		}
		return types.NewRecord(rec), nil
	case []any:
		vals := make([]types.Value, 0, len(v))
		for _, e := range v {
			cv, err := toValue(e, false, depth+1)
			if err != nil {
				return nil, err
			}
			vals = append(vals, cv)
		}
		return types.NewSet(vals...), nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}
