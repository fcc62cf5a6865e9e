package authz

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cedar-policy/cedar-go/types"

	"github.com/warderhq/warder/internal/errkind"
)

// EntityResolver supplies what Cedar needs to know about an entity: its
// direct parents (User::"alice" is in Group::"dba"; Account::"db1/root" is
// in Target::"db1"). Authz walks them transitively, asking about each entity
// at most once per request, tolerating cycles and refusing hierarchies
// deeper than MaxDepth or wider than MaxAncestors. An unknown entity has no
// parents: return (nil, nil). An error fails the request (the caller denies).
//
// The identity package implements it for User, Group and Machine, the vault
// for Target, Account and Secret. Caching is the resolver's job.
type EntityResolver interface {
	Parents(ctx context.Context, uid UID) ([]UID, error)
}

// AttributeResolver is implemented by an EntityResolver that also knows
// entity attributes (User email, Account kind: see schema.cedarschema).
// Authz asks it about the principal and the resource of a request. Values
// may be string, bool, int, int64, netip.Addr or []string; an attribute of
// the wrong type makes the policies using it error (and be skipped). An
// unknown entity has no attributes: return (nil, nil).
type AttributeResolver interface {
	Attributes(ctx context.Context, uid UID) (map[string]any, error)
}

// Bounds on the entity hierarchy walked for one request.
const (
	MaxDepth     = 16  // parent links followed from the principal or resource
	MaxAncestors = 512 // entities in the ancestry of the principal and resource together
)

// entities resolves the ancestry of the principal and resource of one
// request. Cedar sees two entities: the principal and the resource, each
// with its whole ancestry as parents, so that `in` is one lookup. Their
// ancestors are not entities of their own: an expression asking whether
// some other entity is in another (`Group::"a" in Group::"b"`) is false
// unless they are the same; `principal in ...` and `resource in ...`,
// which is what policies ask, see the whole hierarchy.
type entities struct {
	r       EntityResolver
	pair    [2]types.Entity                       // principal, resource
	parents map[types.EntityUID][]types.EntityUID // direct, of every entity resolved
	n       int                                   // ancestors found so far, for MaxAncestors
}

// Get implements types.EntityGetter.
func (e *entities) Get(uid types.EntityUID) (types.Entity, bool) {
	for _, ent := range e.pair {
		if ent.UID == uid {
			return ent, true
		}
	}
	return types.Entity{}, false
}

// load resolves uid and its ancestors into e.pair[slot] and returns uid
// followed by its ancestors.
func (e *entities) load(ctx context.Context, slot int, uid UID) ([]types.EntityUID, error) {
	root := uid.cedar()
	// Ancestries are small: a slice beats a map for the seen set.
	all := []types.EntityUID{root}
	for start, depth := 0, 0; start < len(all); depth++ {
		end := len(all)
		for _, u := range all[start:end] {
			ps, err := e.direct(ctx, u)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				if slices.Contains(all, p) {
					continue
				}
				if depth >= MaxDepth {
					return nil, errkind.New(errkind.Invalid, "authz: ancestry of %s is deeper than %d", uid, MaxDepth)
				}
				if e.n++; e.n > MaxAncestors {
					return nil, errkind.New(errkind.Invalid, "authz: ancestry of the request has more than %d entities", MaxAncestors)
				}
				all = append(all, p)
			}
		}
		start = end
	}
	ent := types.Entity{UID: root, Parents: types.NewEntityUIDSet(all[1:]...)}
	if ar, ok := e.r.(AttributeResolver); ok {
		a, err := ar.Attributes(ctx, uid)
		if err != nil {
			return nil, fmt.Errorf("authz: attributes of %s: %w", uid, err)
		}
		ent.Attributes = attrRecord(a)
	}
	e.pair[slot] = ent
	return all, nil
}

// direct returns the direct parents of u, asking the resolver once per
// request.
func (e *entities) direct(ctx context.Context, u types.EntityUID) ([]types.EntityUID, error) {
	if ps, ok := e.parents[u]; ok {
		return ps, nil
	}
	got, err := e.r.Parents(ctx, UID{Type: string(u.Type), ID: string(u.ID)})
	if err != nil {
		return nil, fmt.Errorf("authz: parents of %s: %w", u, err)
	}
	var ps []types.EntityUID
	if len(got) > 0 {
		ps = make([]types.EntityUID, len(got))
		for i, p := range got {
			ps[i] = p.cedar()
		}
	}
	if e.parents == nil {
		e.parents = make(map[types.EntityUID][]types.EntityUID, 8)
	}
	e.parents[u] = ps
	return ps, nil
}

// attrRecord converts resolver attributes; values of other types are left
// out (a policy reading them sees them missing).
func attrRecord(a map[string]any) types.Record {
	if len(a) == 0 {
		return types.Record{}
	}
	rec := types.RecordMap{}
	for k, v := range a {
		switch v := v.(type) {
		case string:
			rec[types.String(k)] = types.String(v)
		case bool:
			rec[types.String(k)] = types.Boolean(v)
		case int:
			rec[types.String(k)] = types.Long(v)
		case int64:
			rec[types.String(k)] = types.Long(v)
		case netip.Addr:
			v = v.Unmap().WithZone("")
			if v.IsValid() {
				rec[types.String(k)] = types.IPAddr(netip.PrefixFrom(v, v.BitLen()))
			}
		case []string:
			vals := make([]types.Value, len(v))
			for i, s := range v {
				vals[i] = types.String(s)
			}
			rec[types.String(k)] = types.NewSet(vals...)
		}
	}
	return types.NewRecord(rec)
}
