package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// Tests of one backend's own behaviour.

func openSQLite(t *testing.T, path string) (*store.DB, error) {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{SQLitePath: path})
	if err == nil {
		t.Cleanup(func() { db.Close() })
	}
	return db, err
}

func TestSQLiteSecondOpenRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "warder.db")
	first, err := openSQLite(t, path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = openSQLite(t, path)
	if !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("second Open = %v (kind %v), want Conflict", err, errkind.Of(err))
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := openSQLite(t, path); err != nil {
		t.Fatalf("Open after the first was closed: %v", err)
	}
}

// realDatabase writes a migrated SQLite database of several pages at path.
func realDatabase(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, "test", migrations(map[string]string{"0001_t.sql": `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`})); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if _, err := db.ExecContext(ctx, `INSERT INTO t (id, v) VALUES ($1, $2)`, i, strings.Repeat("x", 200)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSQLiteRefusesDamagedFile(t *testing.T) {
	garbage := make([]byte, 8<<10)
	rand.Read(garbage)
	tests := []struct {
		name string
		make func(t *testing.T, path string)
	}{
		{"random garbage", func(t *testing.T, path string) { os.WriteFile(path, garbage, 0o600) }},
		{"text file", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("listen: 127.0.0.1:8200\n"), 100), 0o600)
		}},
		{"truncated to half", func(t *testing.T, path string) {
			realDatabase(t, path)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated to the header", func(t *testing.T, path string) {
			realDatabase(t, path)
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "warder.db")
			tt.make(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = openSQLite(t, path)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if msg := err.Error(); !strings.Contains(msg, "corrupt") && !strings.Contains(msg, "not a Warder database") {
				t.Errorf("error %q does not say corrupt or not a Warder database", msg)
			}
			t.Logf("Open: %v", err)
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("file changed: %d bytes before, %d after", len(before), len(after))
			}
			// The lock was released: the file may be opened (and refused) again.
			if _, err := openSQLite(t, path); errkind.Is(err, errkind.Conflict) {
				t.Errorf("second Open = %v: the lock was kept", err)
			}
		})
	}
}

// TestSQLitePathCharacters checks that the database is the file named,
// whatever characters its path holds.
func TestSQLitePathCharacters(t *testing.T) {
	for _, name := range []string{"with space", "hash#sign", "per%41cent", "query?mark", "amp&semi;colon"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), name)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "warder.db")
			db, err := openSQLite(t, path)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Migrate(context.Background(), "test", migrations(map[string]string{"0001_t.sql": `CREATE TABLE t (id INTEGER)`})); err != nil {
				t.Fatal(err)
			}
			db.Close()
			fi, err := os.Stat(path)
			if err != nil || fi.Size() == 0 {
				t.Fatalf("database not at %s: %v", path, err)
			}
			entries, _ := os.ReadDir(filepath.Dir(dir))
			if len(entries) != 1 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("files created beside the data directory: %v", names)
			}
		})
	}
}

func TestPostgresErrorsHidePassword(t *testing.T) {
	const password = "s3cretPassw0rd"
	tests := []struct {
		name string
		url  string
		kind errkind.Kind
	}{
		{"unparseable", "postgres://warder:" + password + "@127.0.0.1:notaport/db", errkind.Invalid},
		{"bad option", "postgres://warder:" + password + "@127.0.0.1/db?sslmode=bogus", errkind.Invalid},
		{"password in query", "postgres://127.0.0.1:1/db?user=warder&password=" + password + "&connect_timeout=5", errkind.Unavailable},
		{"unreachable", "postgres://warder:" + password + "@127.0.0.1:1/db?connect_timeout=5", errkind.Unavailable},
		{"no such database", "postgres://postgres:" + password + "@127.0.0.1:5432/warder_no_such_db?sslmode=disable", errkind.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			db, err := store.Open(ctx, store.Config{PostgresURL: tt.url})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error repeats the password: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "store: ") {
				t.Errorf("error %q lacks the store: prefix", err)
			}
			if tt.kind != errkind.Other && !errkind.Is(err, tt.kind) {
				t.Errorf("kind = %v, want %v (%v)", errkind.Of(err), tt.kind, err)
			}
		})
	}
}

func TestPostgresTwoHandlesShareMigrations(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	var dbs [2]*store.DB
	for i := range dbs {
		db, err := store.Open(ctx, store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	errs := make(chan error, 2)
	for _, db := range dbs {
		go func() { errs <- db.Migrate(ctx, "inv", migrations(mig3)) }()
	}
	for range dbs {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Migrate: %v", err)
		}
	}
	if got := version(t, dbs[1], "inv"); got != 3 {
		t.Errorf("version = %d, want 3", got)
	}
	if got := count(t, dbs[0], `SELECT COUNT(*) FROM items`); got != 1 {
		t.Errorf("items holds %d rows, want 1: a migration ran twice", got)
	}
}
