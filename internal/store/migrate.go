package store

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/errkind"
)

// Migrate brings component's tables up to date. fsys holds one directory per
// backend ("sqlite", "postgres"), each with files named NNNN_description.sql
// numbered from 1 without gaps. Each file runs in its own transaction, with
// the ledger entry that records it, so a crash leaves the schema at a
// numbered version. Concurrent Migrate calls from several processes on one
// PostgreSQL database run one after the other.
//
// A database whose ledger names a version this binary does not have is
// refused: an older binary must not write to a newer schema.
func (db *DB) Migrate(ctx context.Context, component string, fsys fs.FS) error {
	migs, err := readMigrations(fsys, string(db.kind))
	if err != nil {
		return fmt.Errorf("store: migrations of %s: %w", component, err)
	}
	if err := db.ensureLedger(ctx); err != nil {
		return err
	}
	for {
		applied := false
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if err := db.Lock(ctx, tx, "migrate"); err != nil {
				return err
			}
			var cur int
			if err := tx.QueryRowContext(ctx,
				`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1`, component).Scan(&cur); err != nil {
				return fmt.Errorf("store: read schema version of %s: %w", component, err)
			}
			if cur > len(migs) {
				return errkind.New(errkind.Conflict,
					"store: %s schema is at version %d, newer than this binary knows (%d); upgrade warder", component, cur, len(migs))
			}
			if cur == len(migs) {
				return nil
			}
			m := migs[cur]
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("store: migration %s/%s: %w", component, m.name, err)
			}
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ($1, $2, $3, $4)`,
				component, m.version, m.name, Micros(time.Now())); err != nil {
				return fmt.Errorf("store: record migration %s/%s: %w", component, m.name, err)
			}
			applied = true
			return nil
		})
		if err != nil {
			return err
		}
		if !applied {
			return nil
		}
	}
}

// ensureLedger creates the migration ledger if it is missing.
func (db *DB) ensureLedger(ctx context.Context) error {
	return db.InTx(ctx, func(tx *sql.Tx) error {
		if err := db.Lock(ctx, tx, "migrate"); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			component  TEXT    NOT NULL,
			version    INTEGER NOT NULL,
			name       TEXT    NOT NULL,
			applied_at BIGINT  NOT NULL,
			PRIMARY KEY (component, version))`)
		if err != nil {
			return fmt.Errorf("store: create migration ledger: %w", db.classify(err))
		}
		return nil
	})
}

// SchemaVersion reports the migration version of component (0 if none ran).
func (db *DB) SchemaVersion(ctx context.Context, component string) (int, error) {
	var v int
	err := db.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1`, component).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store: read schema version of %s: %w", component, db.classify(err))
	}
	return v, nil
}

type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^([0-9]{4})_[a-z0-9_]+\.sql$`)

func readMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var migs []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("%s/%s: name is not NNNN_description.sql", dir, e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		migs = append(migs, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	for i, m := range migs {
		if m.version != i+1 {
			return nil, fmt.Errorf("%s: migration %s out of sequence: want version %d", dir, m.name, i+1)
		}
	}
	return migs, nil
}
