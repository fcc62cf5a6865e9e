package server

import (
	"context"

	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/vault"
)

// EntityResolver tells the policy engine which groups a principal or
// group belongs to (from the identity directory) and where a vault entity
// sits (an account in its target, from the vault).
func EntityResolver(dir *identity.Directory, v *vault.Vault) authz.EntityResolver {
	return &entities{dir, v}
}

type entities struct {
	identity *identity.Directory
	vault    *vault.Vault // set at wiring, before the first request
}

var kinds = map[string]string{"User": "user", "Machine": "machine", "Group": "group"}

// Parents returns the direct parents of uid. Entities nobody knows have
// none.
func (e *entities) Parents(ctx context.Context, uid authz.UID) ([]authz.UID, error) {
	kind, ok := kinds[uid.Type]
	if !ok {
		if e.vault != nil {
			return e.vault.Parents(ctx, uid)
		}
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

// SetVault lets a resolver made by EntityResolver before the vault existed
// resolve vault entities. Call it at wiring time, before any request.
func SetVault(r authz.EntityResolver, v *vault.Vault) {
	if e, ok := r.(*entities); ok {
		e.vault = v
	}
}
