package vault

import (
	"context"
	"fmt"

	"github.com/warderhq/warder/internal/barrier"
)

// Rewrap implements barrier.Rewrapper: it re-encrypts every credential
// version and secret version under an older data key with b's current one,
// and reports how many records it changed. A record changed meanwhile is
// left for the next round.
func (v *Vault) Rewrap(ctx context.Context, b *barrier.Barrier) (int, error) {
	n, err := v.rewrapTable(ctx, b, `SELECT account_id, version, credential_ct FROM vault_credentials`,
		`UPDATE vault_credentials SET credential_ct = $1 WHERE account_id = $2 AND version = $3 AND credential_ct = $4`, credentialAAD)
	if err != nil {
		return n, err
	}
	m, err := v.rewrapTable(ctx, b, `SELECT path, version, data_ct FROM vault_secrets`,
		`UPDATE vault_secrets SET data_ct = $1 WHERE path = $2 AND version = $3 AND data_ct = $4`, secretAAD)
	return n + m, err
}

func (v *Vault) rewrapTable(ctx context.Context, b *barrier.Barrier, sel, upd string, aad func(string, int64) barrier.AAD) (int, error) {
	type row struct {
		id      string
		version int64
		ct      []byte
	}
	rows, err := v.db.QueryContext(ctx, sel)
	if err != nil {
		return 0, fmt.Errorf("vault: rewrap: %w", err)
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.version, &r.ct); err != nil {
			rows.Close()
			return 0, fmt.Errorf("vault: rewrap: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("vault: rewrap: %w", err)
	}
	n := 0
	for _, r := range all {
		ct, changed, err := b.Rewrap(ctx, aad(r.id, r.version), r.ct)
		if err != nil {
			return n, fmt.Errorf("vault: rewrap %q version %d: %w", r.id, r.version, err)
		}
		if !changed {
			continue
		}
		res, err := v.db.ExecContext(ctx, upd, ct, r.id, r.version, r.ct)
		if err != nil {
			return n, fmt.Errorf("vault: rewrap %q version %d: %w", r.id, r.version, err)
		}
		if k, _ := res.RowsAffected(); k == 1 {
			n++
		}
	}
	return n, nil
}
