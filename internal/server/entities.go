package server

import (
	"context"
	"strings"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/identity"
)

// EntityResolver tells the policy engine which groups a principal or
// group belongs to, from the identity directory. Later components (the
// vault's targets and accounts) extend it.
func EntityResolver(dir *identity.Directory) authz.EntityResolver { return entities{dir} }

type entities struct {
	identity *identity.Directory
}

var kinds = map[string]string{"User": "user", "Machine": "machine", "Group": "group"}

// Parents returns the direct parents of uid: the groups of a principal or
// group, and the target of an account ("target/user" is in Target::"target").
// Entities nobody knows have none.
func (e entities) Parents(ctx context.Context, uid authz.UID) ([]authz.UID, error) {
	if uid.Type == "Account" {
		if target, _, ok := strings.Cut(uid.ID, "/"); ok && target != "" {
			return []authz.UID{{Type: "Target", ID: target}}, nil
		}
		return nil, nil
	}
	kind, ok := kinds[uid.Type]
	if !ok {
		return nil, nil
	}
	names, err := e.identity.Parents(ctx, kind, uid.ID)
	if err != nil {
		return nil, err
	}
	out := make([]authz.UID, len(names))
	for i, n := range names {
		out[i] = authz.UID{Type: "Group", ID: n}
	}
	return out, nil
}
