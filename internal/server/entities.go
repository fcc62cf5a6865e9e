package server

import (
	"context"

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

// Parents returns the direct parent groups of uid; entities identity does
// not know have none.
func (e entities) Parents(ctx context.Context, uid authz.UID) ([]authz.UID, error) {
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
