package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/warderhq/warder/internal/errkind"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// openSQLite opens path in WAL mode with full fsync on commit, after taking
// an exclusive lock on path+".lock" so that a second process is refused
// instead of corrupting state it cannot see (seal state lives in memory).
func openSQLite(ctx context.Context, path string) (*DB, error) {
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "store: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, errkind.New(errkind.Conflict, "store: %s is in use by another process", path)
	}
	// Create the file owner-only before SQLite does (it would use the
	// umask); the -wal and -shm files inherit its mode.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 && fi.Size() < 512 {
		lock.Close()
		return nil, errkind.New(errkind.Invalid, "store: %s is truncated or not a Warder database (%d bytes)", path, fi.Size())
	}

	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := "file:" + sqliteURIPath(path) + "?" + q.Encode()

	write, err := sql.Open("sqlite", dsn)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	write.SetMaxOpenConns(1) // SQLite has one writer; queue in Go, not in busy_timeout
	read, err := sql.Open("sqlite", dsn)
	if err != nil {
		write.Close()
		lock.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	read.SetMaxOpenConns(4)

	db := &DB{kind: SQLite, read: read, write: write}
	db.closer = func() error {
		err := errors.Join(read.Close(), write.Close())
		lock.Close() // releases the flock
		return err
	}
	if err := checkSQLite(ctx, write, path); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkSQLite refuses a file that is not a SQLite database or is damaged,
// before any migration could write to it.
func checkSQLite(ctx context.Context, db *sql.DB, path string) error {
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&res); err != nil {
		return errkind.New(errkind.Invalid, "store: %s is corrupt or not a Warder database: %s", path, sqliteReason(err))
	}
	if res != "ok" {
		return errkind.New(errkind.Invalid, "store: %s is corrupt: integrity check says %q", path, res)
	}
	return nil
}

// sqliteURIPath escapes path for a file: URI, in which SQLite decodes %XX
// and ends the path at '?' or '#'.
func sqliteURIPath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// sqliteReason shortens the driver's error to its message.
func sqliteReason(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.Contains(msg, "SQLITE_") {
		return msg[i+2:]
	}
	return msg
}
