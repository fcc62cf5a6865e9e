// Package store opens Warder's database and runs transactions on it.
//
// Two backends implement the same contract: an embedded SQLite file (the
// default, through a pure-Go driver so the binary needs no cgo) and
// PostgreSQL (through pgx), which several server processes may share.
// Queries are written once with $1-style placeholders, which both accept.
//
// Each domain package owns its tables: it embeds its migrations and calls
// Migrate with its component name at start. Store itself knows no table but
// the migration ledger.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/errkind"
)

// Kind names a backend.
type Kind string

// The backends.
const (
	SQLite   Kind = "sqlite"
	Postgres Kind = "postgres"
)

// DB is an open database. It is safe for concurrent use.
//
// Reads outside a transaction may run in parallel. On SQLite, writes are
// serialised through one connection, so a function passed to InTx must use
// only the *sql.Tx it is given: calling DB methods from inside it deadlocks.
type DB struct {
	kind   Kind
	read   *sql.DB // queries outside a transaction
	write  *sql.DB // transactions and Exec; the same pool as read on PostgreSQL
	closer func() error
}

// Config says which database to open. Exactly one field is set.
type Config struct {
	// SQLitePath is the path of the SQLite database file. Its directory must
	// exist; the file is created if missing. A lock file beside it keeps a
	// second process from opening it.
	SQLitePath string
	// PostgresURL is a postgres:// connection URL.
	PostgresURL string
}

// Open opens and checks the database described by cfg. The caller must Close it.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	switch {
	case cfg.SQLitePath != "" && cfg.PostgresURL != "":
		return nil, errkind.New(errkind.Invalid, "store: both a SQLite path and a PostgreSQL URL given")
	case cfg.SQLitePath != "":
		return openSQLite(ctx, cfg.SQLitePath)
	case cfg.PostgresURL != "":
		return openPostgres(ctx, cfg.PostgresURL)
	}
	return nil, errkind.New(errkind.Invalid, "store: no database configured")
}

// Kind reports the backend.
func (db *DB) Kind() Kind { return db.kind }

// Close closes the database.
func (db *DB) Close() error { return db.closer() }

// QueryContext runs a query outside any transaction.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.read.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query returning at most one row outside any transaction.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, query, args...)
}

// ExecContext runs a statement in a transaction of its own.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.write.ExecContext(ctx, query, args...)
}

// InTx runs fn in a transaction, committing when fn returns nil and rolling
// back otherwise. On SQLite the transaction holds the write lock from its
// start (BEGIN IMMEDIATE), so read-modify-write sequences inside it are safe.
// On PostgreSQL it runs at READ COMMITTED; use Lock to serialise.
func (db *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", db.classify(err))
	}
	done := false
	defer func() {
		// Roll back on error, panic and runtime.Goexit alike: on SQLite a
		// transaction left open would hold the only write connection.
		if !done || err != nil {
			tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	done = true
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", db.classify(err))
	}
	return nil
}

// Lock takes a lock named name that is held until tx ends. Two transactions
// taking the same name run one after the other, across processes. On SQLite,
// where every transaction already holds the database's write lock, it does
// nothing.
func (db *DB) Lock(ctx context.Context, tx *sql.Tx, name string) error {
	if db.kind != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "warder:"+name); err != nil {
		return fmt.Errorf("store: lock %q: %w", name, db.classify(err))
	}
	return nil
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.read.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", db.classify(err))
	}
	return nil
}

// classify marks errors that mean "the database is not reachable" as
// Unavailable, leaving others as they are.
func (db *DB) classify(err error) error {
	if err == nil || errkind.Of(err) != errkind.Other {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return errkind.Wrap(errkind.Unavailable, err)
	}
	msg := err.Error()
	for _, s := range []string{"connection refused", "database is locked", "SQLITE_BUSY", "conn closed", "broken pipe", "too many clients"} {
		if strings.Contains(msg, s) {
			return errkind.Wrap(errkind.Unavailable, err)
		}
	}
	return err
}

// IsUniqueViolation reports whether err is a unique or primary-key
// constraint violation on either backend.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "SQLSTATE 23505") || // PostgreSQL unique_violation
		strings.Contains(msg, "UNIQUE constraint failed") ||
		strings.Contains(msg, "PRIMARY KEY constraint failed") ||
		strings.Contains(msg, "constraint failed: UNIQUE")
}

// Micros converts t to the integer microseconds since the Unix epoch in
// which Warder stores times (portable across both backends).
func Micros(t time.Time) int64 { return t.UnixMicro() }

// FromMicros is the inverse of Micros; it returns a UTC time.
func FromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
