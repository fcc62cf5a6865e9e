package vault

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/store"
)

// Limits on application secrets.
const (
	MaxSecretKeys  = 100
	MaxSecretBytes = 64 << 10 // keys and values of one version together
)

var (
	secretPathRE = regexp.MustCompile(`^[a-z0-9][a-z0-9/_.-]{0,255}$`)
	// Keys become environment variable names (warder run).
	secretKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// SecretMeta describes one version of a secret, without its values.
type SecretMeta struct {
	Path      string    `json:"path"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	Keys      []string  `json:"keys"`
}

func secretAAD(path string, version int64) barrier.AAD {
	return barrier.AAD{Kind: "vault.secret", ID: path, Version: version}
}

func checkSecretPath(path string) error {
	if !secretPathRE.MatchString(path) || slices.Contains([]string{".", ".."}, path) {
		return errkind.New(errkind.Invalid, "vault: secret path %q is not 1 to 256 of a-z, 0-9, / _ . - starting with a letter or digit", clip(path))
	}
	return nil
}

// PutSecret stores data as a new version of the secret at path and
// returns its description. The caller checks that o may (an
// administrator, by policy).
func (v *Vault) PutSecret(ctx context.Context, o audit.Origin, path string, data map[string]string) (SecretMeta, error) {
	if err := checkSecretPath(path); err != nil {
		return SecretMeta{}, err
	}
	if len(data) == 0 || len(data) > MaxSecretKeys {
		return SecretMeta{}, errkind.New(errkind.Invalid, "vault: a secret holds 1 to %d keys, not %d", MaxSecretKeys, len(data))
	}
	size := 0
	keys := make([]string, 0, len(data))
	for k, val := range data {
		if !secretKeyRE.MatchString(k) {
			return SecretMeta{}, errkind.New(errkind.Invalid, "vault: secret key %q is not a name of letters, digits and _", clip(k))
		}
		size += len(k) + len(val)
		keys = append(keys, k)
	}
	if size > MaxSecretBytes {
		return SecretMeta{}, errkind.New(errkind.TooLarge, "vault: secret is %d bytes, more than %d", size, MaxSecretBytes)
	}
	slices.Sort(keys)
	pt, err := json.Marshal(data)
	if err != nil {
		return SecretMeta{}, fmt.Errorf("vault: encode secret: %w", err)
	}
	defer clear(pt)
	keysJSON, _ := json.Marshal(keys)
	created, now := v.nowMicros()
	meta := SecretMeta{Path: path, CreatedAt: created, Keys: keys}
	err = v.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := v.db.Lock(ctx, tx, "vault.secret:"+path); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM vault_secrets WHERE path = $1`, path).Scan(&meta.Version); err != nil {
			return fmt.Errorf("vault: put secret %q: %w", path, err)
		}
		ct, err := v.cipher.Encrypt(ctx, secretAAD(path, meta.Version), pt)
		if err != nil {
			return fmt.Errorf("vault: encrypt secret %q: %w", path, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO vault_secrets (path, version, data_ct, keys, created_at) VALUES ($1, $2, $3, $4, $5)`,
			path, meta.Version, ct, string(keysJSON), now); err != nil {
			if store.IsUniqueViolation(err) {
				return errkind.New(errkind.Conflict, "vault: secret %q was written concurrently; try again", path)
			}
			return fmt.Errorf("vault: put secret %q: %w", path, err)
		}
		_, err = v.audit.AppendTx(ctx, tx, o.Event("secret.put", "secret:"+path, audit.OutcomeSuccess,
			map[string]string{"version": strconv.FormatInt(meta.Version, 10), "keys": clipText(string(keysJSON), audit.MaxFieldBytes)}))
		return err
	})
	if err != nil {
		return SecretMeta{}, err
	}
	return meta, nil
}

// GetSecret returns version (0: the latest) of the secret at path, if
// policy lets p read it (action "read_secret" on Secret::"path"). The read
// is audited "secret.read"; if the event cannot be written nothing is
// returned.
func (v *Vault) GetSecret(ctx context.Context, o audit.Origin, p identity.Principal, path string, version int, actx authz.Context) (map[string]string, SecretMeta, error) {
	if err := checkSecretPath(path); err != nil {
		return nil, SecretMeta{}, err
	}
	if version < 0 {
		return nil, SecretMeta{}, errkind.New(errkind.Invalid, "vault: secret version %d is negative", version)
	}
	puid, err := principalUID(p)
	if err != nil {
		return nil, SecretMeta{}, err
	}
	d, err := v.authz.Authorize(ctx, o, authz.Request{Principal: puid, Action: authz.ActionReadSecret,
		Resource: authz.UID{Type: authz.TypeSecret, ID: path}, Context: actx})
	if err != nil {
		return nil, SecretMeta{}, err
	}
	if !d.Allow {
		return nil, SecretMeta{}, errkind.New(errkind.Denied, "vault: %s may not read secret %s", p.Actor(), path)
	}
	q := `SELECT version, data_ct, keys, created_at FROM vault_secrets WHERE path = $1 ORDER BY version DESC LIMIT 1`
	args := []any{path}
	if version > 0 {
		q, args = `SELECT version, data_ct, keys, created_at FROM vault_secrets WHERE path = $1 AND version = $2`, append(args, version)
	}
	var ct []byte
	var keys string
	var created int64
	meta := SecretMeta{Path: path}
	err = v.db.QueryRowContext(ctx, q, args...).Scan(&meta.Version, &ct, &keys, &created)
	if errors.Is(err, sql.ErrNoRows) {
		if version > 0 {
			return nil, SecretMeta{}, errkind.New(errkind.NotFound, "vault: no version %d of secret %q", version, path)
		}
		return nil, SecretMeta{}, errkind.New(errkind.NotFound, "vault: no secret %q", path)
	}
	if err != nil {
		return nil, SecretMeta{}, fmt.Errorf("vault: read secret %q: %w", path, err)
	}
	meta.CreatedAt = store.FromMicros(created)
	if err := json.Unmarshal([]byte(keys), &meta.Keys); err != nil {
		return nil, SecretMeta{}, fmt.Errorf("vault: secret %q: keys: %w", path, err)
	}
	pt, err := v.cipher.Decrypt(ctx, secretAAD(path, meta.Version), ct)
	if err != nil {
		return nil, SecretMeta{}, fmt.Errorf("vault: decrypt secret %q version %d: %w", path, meta.Version, err)
	}
	defer clear(pt)
	var data map[string]string
	if err := json.Unmarshal(pt, &data); err != nil {
		return nil, SecretMeta{}, fmt.Errorf("vault: decode secret %q version %d: %w", path, meta.Version, err)
	}
	if _, err := v.audit.Append(ctx, o.Event("secret.read", "secret:"+path, audit.OutcomeSuccess,
		map[string]string{"version": strconv.FormatInt(meta.Version, 10), "principal": p.Actor()})); err != nil {
		return nil, SecretMeta{}, fmt.Errorf("vault: audit secret read: %w", err)
	}
	return data, meta, nil
}

// ListSecrets describes the latest version of every secret, by path.
func (v *Vault) ListSecrets(ctx context.Context) ([]SecretMeta, error) {
	rows, err := v.db.QueryContext(ctx, `SELECT s.path, s.version, s.keys, s.created_at FROM vault_secrets s
		WHERE s.version = (SELECT MAX(version) FROM vault_secrets m WHERE m.path = s.path) ORDER BY s.path`)
	if err != nil {
		return nil, fmt.Errorf("vault: list secrets: %w", err)
	}
	defer rows.Close()
	out := []SecretMeta{}
	for rows.Next() {
		var m SecretMeta
		var keys string
		var created int64
		if err := rows.Scan(&m.Path, &m.Version, &keys, &created); err != nil {
			return nil, fmt.Errorf("vault: list secrets: %w", err)
		}
		if err := json.Unmarshal([]byte(keys), &m.Keys); err != nil {
			return nil, fmt.Errorf("vault: secret %q: keys: %w", m.Path, err)
		}
		m.CreatedAt = store.FromMicros(created)
		out = append(out, m)
	}
	return out, rows.Err()
}
