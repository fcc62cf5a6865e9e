package authz

import (
	_ "embed"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/warderhq/warder/internal/errkind"
)

// schemaText is the Cedar schema every policy is validated against.
//
//go:embed schema.cedarschema
var schemaText []byte

// The actions of the schema.
const (
	ActionAdmin         = "admin"          // on System: all administration
	ActionAuditRead     = "audit_read"     // on System
	ActionCheckout      = "checkout"       // on Account, Target
	ActionCheckin       = "checkin"        // on Account, Target
	ActionRotate        = "rotate"         // on Account, Target
	ActionConnect       = "connect"        // on Account, Target
	ActionPortForward   = "port_forward"   // on Account, Target: an SSH port forward
	ActionReadSecret    = "read_secret"    // on Secret
	ActionRequestAccess = "request_access" // on Role
	ActionApprove       = "approve"        // on Role
)

// MaxPolicyBytes bounds the text of one stored policy.
const MaxPolicyBytes = 64 << 10

// maxErrorLines bounds how many validation messages an error carries.
const maxErrorLines = 12

// namePattern is what policy names and @id annotations must match.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// model is the parsed schema: the validator and what requests are checked
// against. It is immutable once built.
type model struct {
	validator *validate.Validator
	actions   map[string]actionModel // by action name
	context   resolved.RecordType
	// entityAttrs holds every attribute any entity type declares.
	entityAttrs map[types.String]bool
}

type actionModel struct {
	uid        types.EntityUID
	principals []types.EntityType
	resources  []types.EntityType
}

// newModel parses the embedded schema.
func newModel() (*model, error) {
	var s schema.Schema
	s.SetFilename("schema.cedarschema")
	if err := s.UnmarshalCedar(schemaText); err != nil {
		return nil, fmt.Errorf("authz: parse schema: %w", err)
	}
	r, err := s.Resolve()
	if err != nil {
		return nil, fmt.Errorf("authz: resolve schema: %w", err)
	}
	m := &model{validator: validate.New(r, validate.WithStrict()), actions: map[string]actionModel{},
		entityAttrs: map[types.String]bool{}}
	for _, e := range r.Entities {
		for a := range e.Shape {
			m.entityAttrs[a] = true
		}
	}
	for uid, a := range r.Actions {
		if a.AppliesTo == nil {
			continue
		}
		m.actions[string(uid.ID)] = actionModel{uid: uid, principals: a.AppliesTo.Principals, resources: a.AppliesTo.Resources}
		m.context = a.AppliesTo.Context // every action shares RequestContext
	}
	return m, nil
}

// compiled is one policy statement ready to evaluate.
type compiled struct {
	id     cedar.PolicyID
	policy *cedar.Policy
	// expires is when a grant policy stops applying, in µs since the
	// epoch; 0 for a stored policy, which does not expire.
	expires int64
}

// live reports whether c applies at now (µs since the epoch).
func (c compiled) live(now int64) bool { return c.expires == 0 || now < c.expires }

// Validate reports whether text would be accepted by Put: at most
// MaxPolicyBytes of UTF-8 holding one or more Cedar policy statements, each
// valid against the schema (known actions, entity types and attributes,
// well-typed conditions) and with unique, well-formed @id annotations. The
// error is errkind.Invalid (TooLarge for the size) and carries Cedar's
// messages.
func Validate(text string) error {
	m, err := newModel()
	if err != nil {
		return err
	}
	_, err = m.compile("policy", text, true)
	return err
}

// compile parses text, stored under name, into its statements and gives
// each its id: the value of its @id annotation if it has one; otherwise
// name when text holds one statement, and name.N (N counting statements
// from 1) when it holds several. When check is set it also enforces the
// limits and the schema; policies loaded from the database are not
// re-validated, so that a stored policy keeps working as the schema grows.
func (m *model) compile(name, text string, check bool) ([]compiled, error) {
	if check {
		switch {
		case len(text) > MaxPolicyBytes:
			return nil, errkind.New(errkind.TooLarge, "authz: policy %q is %d bytes, more than %d", name, len(text), MaxPolicyBytes)
		case !utf8.ValidString(text) || strings.IndexByte(text, 0) >= 0:
			return nil, errkind.New(errkind.Invalid, "authz: policy %q is not valid UTF-8 or contains NUL", name)
		}
	}
	list, err := cedar.NewPolicyListFromBytes(name, []byte(text))
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "authz: policy %q does not parse: %w", name, err)
	}
	if len(list) == 0 {
		return nil, errkind.New(errkind.Invalid, "authz: policy %q holds no policy statement", name)
	}
	out := make([]compiled, 0, len(list))
	seen := map[cedar.PolicyID]bool{}
	for i, p := range list {
		id := name
		if len(list) > 1 {
			id = name + "." + strconv.Itoa(i+1)
		}
		if v, ok := p.Annotations()["id"]; ok {
			if !namePattern.MatchString(string(v)) {
				return nil, errkind.New(errkind.Invalid, "authz: policy %q: @id(%q) does not match %s", name, clip(string(v)), namePattern)
			}
			id = string(v)
		}
		if seen[cedar.PolicyID(id)] {
			return nil, errkind.New(errkind.Invalid, "authz: policy %q: id %q used twice", name, id)
		}
		seen[cedar.PolicyID(id)] = true
		if check {
			if err := m.validator.Policy(id, (*xast.Policy)(p.AST())); err != nil {
				return nil, errkind.New(errkind.Invalid, "authz: policy %q is invalid: %s", name, tidy(err))
			}
			if attr := m.unknownHas((*xast.Policy)(p.AST())); attr != "" {
				return nil, errkind.New(errkind.Invalid, "authz: policy %q is invalid: it tests `has` on %s, which the schema does not have", name, clip(attr))
			}
		}
		out = append(out, compiled{id: cedar.PolicyID(id), policy: p})
	}
	return out, nil
}

// unknownHas returns the first attribute, as "context.a.b" or
// "resource.a", that p tests with `has` while the schema does not declare
// it: on the context or a record in it, or on principal or resource for an
// attribute no entity type has; "" for none. Cedar's validator accepts
// such a test as always false, so a misspelt guard (`context has forwrd
// && …`, `resource has knd && …`) would leave a condition silently never
// holding: a forbid that never applies.
func (m *model) unknownHas(p *xast.Policy) string {
	var bad string
	for _, c := range p.Conditions {
		xast.Inspect(xast.NewNode(c.Body), func(n xast.IsNode) bool {
			h, ok := n.(xast.NodeTypeHas)
			if !ok || bad != "" {
				return bad == ""
			}
			if rec, path, ok := m.contextRecord(h.Arg); ok {
				if _, ok := rec[h.Value]; !ok {
					bad = path + "." + string(h.Value)
				}
			} else if v, ok := h.Arg.(xast.NodeTypeVariable); ok && (v.Name == "principal" || v.Name == "resource") {
				if !m.entityAttrs[h.Value] {
					bad = string(v.Name) + "." + string(h.Value)
				}
			}
			return bad == ""
		})
	}
	return bad
}

// contextRecord returns the record type and path of n when n is context or
// an attribute of it, at any depth, of record type.
func (m *model) contextRecord(n xast.IsNode) (resolved.RecordType, string, bool) {
	switch n := n.(type) {
	case xast.NodeTypeVariable:
		return m.context, "context", n.Name == "context"
	case xast.NodeTypeAccess:
		rec, path, ok := m.contextRecord(n.Arg)
		if !ok {
			return nil, "", false
		}
		r, ok := rec[n.Value].Type.(resolved.RecordType)
		return r, path + "." + string(n.Value), ok
	}
	return nil, "", false
}

// tidy turns the validator's joined errors, which come in map order and
// repeat per action, into sorted unique lines, at most maxErrorLines.
func tidy(err error) string {
	var lines []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		lines = append(lines, strings.Split(e.Error(), "\n")...)
	}
	walk(err)
	slices.Sort(lines)
	lines = slices.Compact(lines)
	if len(lines) > maxErrorLines {
		lines = append(lines[:maxErrorLines], fmt.Sprintf("(and %d more)", len(lines)-maxErrorLines))
	}
	return strings.Join(lines, "; ")
}

// checkRequest checks that req names a known action and principal and
// resource types it applies to, and returns the action.
func (m *model) checkRequest(req Request) (actionModel, error) {
	a, ok := m.actions[req.Action]
	if !ok {
		return a, errkind.New(errkind.Invalid, "authz: unknown action %q", clip(req.Action))
	}
	for _, c := range []struct {
		role  string
		uid   UID
		types []types.EntityType
	}{{"principal", req.Principal, a.principals}, {"resource", req.Resource, a.resources}} {
		if err := c.uid.check(c.role); err != nil {
			return a, err
		}
		if !slices.Contains(c.types, types.EntityType(c.uid.Type)) {
			return a, errkind.New(errkind.Invalid, "authz: action %s does not apply to %s type %s", req.Action, c.role, c.uid.Type)
		}
	}
	return a, nil
}
