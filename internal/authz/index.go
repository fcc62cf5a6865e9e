package authz

import (
	"iter"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// index narrows the policies a request evaluates to those whose scope can
// match it, so that evaluation costs grow with the policies that concern
// the request, not with all policies.
//
// Each policy is filed under every action its action scope admits (all of
// the schema's actions for an unconstrained `action`), and within an
// action under one anchor: the entity its principal scope pins (`==`, `in`
// or `is T in`), else the entity its resource scope pins, else nowhere in
// particular (rest). A request for action A by P on R evaluates A's rest,
// the policies anchored at P or an ancestor of P on the principal side,
// and those anchored at R or an ancestor of R on the resource side.
//
// This is exact: a policy left out has a scope constraint `== E` or `in E`
// with E neither the request's entity nor among its ancestors, so under
// Cedar's semantics its scope, which Cedar evaluates before its conditions,
// is false: it neither matches nor errors. Two assumptions hold it: actions
// have no parents (the schema has no action groups), and the ancestors used
// here are those of the entity map evaluation uses. TestIndexMatchesFullSet
// checks the result against evaluating every policy.
type index struct {
	actions map[types.EntityUID]*bucket
}

type bucket struct {
	principal map[types.EntityUID][]compiled
	resource  map[types.EntityUID][]compiled
	rest      []compiled
}

// newIndex files ps; actions lists the schema's actions.
func newIndex(ps []compiled, actions map[string]actionModel) index {
	ix := index{actions: map[types.EntityUID]*bucket{}}
	get := func(a types.EntityUID) *bucket {
		b := ix.actions[a]
		if b == nil {
			b = &bucket{principal: map[types.EntityUID][]compiled{}, resource: map[types.EntityUID][]compiled{}}
			ix.actions[a] = b
		}
		return b
	}
	for _, c := range ps {
		ast := (*xast.Policy)(c.policy.AST())
		var acts []types.EntityUID
		switch s := ast.Action.(type) {
		case xast.ScopeTypeEq:
			acts = []types.EntityUID{s.Entity}
		case xast.ScopeTypeIn:
			acts = []types.EntityUID{s.Entity}
		case xast.ScopeTypeInSet:
			acts = s.Entities
		default: // all actions
			for _, a := range actions {
				acts = append(acts, a.uid)
			}
		}
		for _, a := range acts {
			b := get(a)
			if e, ok := anchor(ast.Principal); ok {
				b.principal[e] = append(b.principal[e], c)
			} else if e, ok := anchor(ast.Resource); ok {
				b.resource[e] = append(b.resource[e], c)
			} else {
				b.rest = append(b.rest, c)
			}
		}
	}
	return ix
}

// anchor returns the entity a principal or resource scope pins.
func anchor(s xast.IsScopeNode) (types.EntityUID, bool) {
	switch s := s.(type) {
	case xast.ScopeTypeEq:
		return s.Entity, true
	case xast.ScopeTypeIn:
		return s.Entity, true
	case xast.ScopeTypeIsIn:
		return s.Entity, true
	}
	return types.EntityUID{}, false
}

// candidates is the policies of ix that may match a request; it implements
// cedar.PolicyIterator. principal and resource hold the request's entity
// followed by its ancestors.
type candidates struct {
	b                   *bucket
	principal, resource []types.EntityUID
	now                 int64 // µs; grant policies expired by then are left out
}

// candidates returns the policies that may match action by principal on
// resource at now (µs since the epoch).
func (ix index) candidates(action types.EntityUID, principal, resource []types.EntityUID, now int64) candidates {
	return candidates{b: ix.actions[action], principal: principal, resource: resource, now: now}
}

// All yields each candidate once.
func (c candidates) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		if c.b == nil {
			return
		}
		for _, p := range c.b.rest {
			if p.live(c.now) && !yield(p.id, p.policy) {
				return
			}
		}
		for _, side := range [...]struct {
			m   map[types.EntityUID][]compiled
			ids []types.EntityUID
		}{{c.b.principal, c.principal}, {c.b.resource, c.resource}} {
			if len(side.m) == 0 {
				continue
			}
			for _, e := range side.ids {
				for _, p := range side.m[e] {
					if p.live(c.now) && !yield(p.id, p.policy) {
						return
					}
				}
			}
		}
	}
}
