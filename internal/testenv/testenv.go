// Package testenv gives tests real servers: a fresh SQLite file or a fresh
// PostgreSQL database per test, dropped when the test ends.
//
// PostgreSQL is found at $WARDER_TEST_POSTGRES (a URL of a role allowed to
// create databases), by default postgres://warder_test:warder_test@127.0.0.1:5432/postgres
// (scripts/services.sh creates that role).
// `make test` starts the local server when it is not running; a test that
// cannot reach it fails rather than skips, so CI cannot go green without it.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/warderhq/warder/internal/store"
)

// AdminURL is the URL of the PostgreSQL role that creates test databases.
func AdminURL() string {
	if u := os.Getenv("WARDER_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://warder_test:warder_test@127.0.0.1:5432/postgres?sslmode=disable"
}

// Backend is a way to open a fresh store for one test.
type Backend struct {
	Name string
	Open func(t testing.TB) *store.DB
}

// Backends lists both store backends, for tests that must pass on each.
func Backends() []Backend {
	return []Backend{{"sqlite", SQLite}, {"postgres", Postgres}}
}

// SQLite opens a store on a new file in t's temporary directory.
func SQLite(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{SQLitePath: filepath.Join(t.TempDir(), "warder.db")})
	if err != nil {
		t.Fatalf("testenv: open SQLite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Postgres opens a store on a new, empty PostgreSQL database.
func Postgres(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{PostgresURL: PostgresURL(t)})
	if err != nil {
		t.Fatalf("testenv: open PostgreSQL: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// PostgresURL creates a new, empty PostgreSQL database, drops it when t
// ends, and returns its URL. Several store.DBs may be opened on it to act as
// several server processes.
func PostgresURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", AdminURL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer admin.Close()
	if err := admin.PingContext(ctx); err != nil {
		t.Fatalf("testenv: PostgreSQL not reachable at $WARDER_TEST_POSTGRES or 127.0.0.1:5432 (run `make test`, which starts it): %v", err)
	}
	name := "warder_test_" + randomHex(6)
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := sql.Open("pgx", AdminURL())
		if err != nil {
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(AdminURL())
	if err != nil {
		t.Fatalf("testenv: parse admin URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
