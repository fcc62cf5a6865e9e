package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// The suite below is the contract both backends keep; every test runs on
// each of testenv.Backends.

// forEachBackend runs fn as a subtest per backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, be testenv.Backend)) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) { fn(t, be) })
	}
}

// migrations returns an FS holding files (name → SQL) in the directory of
// each backend, so that portable SQL runs on both.
func migrations(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, body := range files {
		for _, dir := range []store.Kind{store.SQLite, store.Postgres} {
			fsys[string(dir)+"/"+name] = &fstest.MapFile{Data: []byte(body)}
		}
	}
	return fsys
}

// The migrations of a pretend component. 0001 inserts a row with a fixed
// primary key, so that running it twice would fail.
var (
	mig1 = map[string]string{
		"0001_items.sql": `CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO items (id, name) VALUES (1, 'first');`,
	}
	mig2 = with(mig1, "0002_tags.sql", `CREATE TABLE tags (id INTEGER PRIMARY KEY)`)
	mig3 = with(mig2, "0003_more.sql", `INSERT INTO tags (id) VALUES (7); CREATE TABLE more (id INTEGER PRIMARY KEY)`)
)

func with(m map[string]string, name, body string) map[string]string {
	out := map[string]string{name: body}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func version(t *testing.T, db *store.DB, component string) int {
	t.Helper()
	v, err := db.SchemaVersion(context.Background(), component)
	if err != nil {
		t.Fatalf("SchemaVersion(%s): %v", component, err)
	}
	return v
}

func count(t *testing.T, db *store.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// tableExists reports whether a query on table succeeds.
func tableExists(db *store.DB, table string) bool {
	var n int
	return db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM `+table).Scan(&n) == nil
}

func TestMigrate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		ctx := context.Background()
		db := be.Open(t)
		if got := db.Kind(); string(got) != be.Name {
			t.Errorf("Kind() = %q, want %q", got, be.Name)
		}
		steps := []struct {
			name      string
			component string
			files     map[string]string
			want      int
		}{
			{"apply in order", "inv", mig2, 2},
			{"idempotent", "inv", mig2, 2},
			{"only the new file", "inv", mig3, 3},
			{"idempotent again", "inv", mig3, 3},
			{"other component independent", "other", map[string]string{"0001_x.sql": `CREATE TABLE other_x (id INTEGER)`}, 1},
		}
		for _, s := range steps {
			if err := db.Migrate(ctx, s.component, migrations(s.files)); err != nil {
				t.Fatalf("%s: Migrate: %v", s.name, err)
			}
			if got := version(t, db, s.component); got != s.want {
				t.Errorf("%s: version = %d, want %d", s.name, got, s.want)
			}
		}
		if got := count(t, db, `SELECT COUNT(*) FROM schema_migrations WHERE component = $1`, "inv"); got != 3 {
			t.Errorf("ledger holds %d rows for inv, want 3", got)
		}
		if got := count(t, db, `SELECT COUNT(*) FROM items`); got != 1 {
			t.Errorf("items holds %d rows, want 1 (0001 ran once)", got)
		}
		if got := count(t, db, `SELECT COUNT(*) FROM tags WHERE id = 7`); got != 1 {
			t.Errorf("second statement of a migration did not run")
		}
		if got := version(t, db, "never-migrated"); got != 0 {
			t.Errorf("version of an unknown component = %d, want 0", got)
		}
	})
}

func TestMigrateRefusesBadFiles(t *testing.T) {
	tests := []struct {
		name  string
		fsys  fstest.MapFS
		want  string
		first bool // whether 0001 is well formed (it must not run either)
	}{
		{"gap", migrations(with(mig1, "0003_c.sql", `SELECT 1`)), "out of sequence", true},
		{"duplicate number", migrations(with(mig1, "0001_again.sql", `SELECT 1`)), "out of sequence", true},
		{"starts at 2", migrations(map[string]string{"0002_b.sql": `SELECT 1`}), "out of sequence", false},
		{"starts at 0", migrations(with(mig1, "0000_z.sql", `SELECT 1`)), "out of sequence", true},
		{"short number", migrations(with(mig1, "2_b.sql", `SELECT 1`)), "not NNNN_description.sql", true},
		{"upper case", migrations(with(mig1, "0002_B.sql", `SELECT 1`)), "not NNNN_description.sql", true},
		{"other file", migrations(with(mig1, "README.md", `hi`)), "not NNNN_description.sql", true},
		{"no description", migrations(with(mig1, "0002.sql", `SELECT 1`)), "not NNNN_description.sql", true},
		{"no directory for backend", fstest.MapFS{"mysql/0001_a.sql": {Data: []byte(`SELECT 1`)}}, "", false},
	}
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				db := be.Open(t)
				err := db.Migrate(context.Background(), "inv", tt.fsys)
				if err == nil {
					t.Fatal("Migrate succeeded")
				}
				if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "store: ") {
					t.Errorf("error %q, want a store: error containing %q", err, tt.want)
				}
				if tableExists(db, "items") {
					t.Error("0001 ran although the set was refused")
				}
			})
		}
	})
}

func TestMigrateLedgerAhead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		ctx := context.Background()
		db := be.Open(t)
		if err := db.Migrate(ctx, "inv", migrations(mig2)); err != nil {
			t.Fatal(err)
		}
		err := db.Migrate(ctx, "inv", migrations(mig1))
		if !errkind.Is(err, errkind.Conflict) {
			t.Fatalf("Migrate with fewer migrations than applied = %v (kind %v), want Conflict", err, errkind.Of(err))
		}
		if got := version(t, db, "inv"); got != 2 {
			t.Errorf("version = %d, want 2", got)
		}
	})
}

func TestMigrateFailureRollsBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		ctx := context.Background()
		db := be.Open(t)
		bad := with(mig1, "0002_partial.sql", `CREATE TABLE partial (id INTEGER PRIMARY KEY);
INSERT INTO partial (id) VALUES (1);
UPDATE items SET name = 'changed';
INSERT INTO no_such_table (id) VALUES (1);`)
		err := db.Migrate(ctx, "inv", migrations(bad))
		if err == nil || !strings.Contains(err.Error(), "0002_partial.sql") {
			t.Fatalf("Migrate = %v, want an error naming 0002_partial.sql", err)
		}
		if got := version(t, db, "inv"); got != 1 {
			t.Errorf("version = %d, want 1 (0001 applied, 0002 not)", got)
		}
		if tableExists(db, "partial") {
			t.Error("table partial exists after its migration failed")
		}
		if got := count(t, db, `SELECT COUNT(*) FROM items WHERE name = 'first'`); got != 1 {
			t.Error("update of the failed migration was kept")
		}
		fixed := with(mig1, "0002_partial.sql", `CREATE TABLE partial (id INTEGER PRIMARY KEY)`)
		if err := db.Migrate(ctx, "inv", migrations(fixed)); err != nil {
			t.Fatalf("Migrate after the fix: %v", err)
		}
		if got := version(t, db, "inv"); got != 2 {
			t.Errorf("version after the fix = %d, want 2", got)
		}
	})
}

// counterDB opens a store with a one-row counter table.
func counterDB(t *testing.T, be testenv.Backend) *store.DB {
	t.Helper()
	db := be.Open(t)
	err := db.Migrate(context.Background(), "test", migrations(map[string]string{
		"0001_counter.sql": `CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counter (id, n) VALUES (1, 0);`,
	}))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func counterValue(t *testing.T, db *store.DB) int {
	t.Helper()
	return count(t, db, `SELECT n FROM counter WHERE id = 1`)
}

func TestInTx(t *testing.T) {
	errBoom := errors.New("boom")
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		ctx := context.Background()
		db := counterDB(t, be)
		set := func(n int) func(tx *sql.Tx) error {
			return func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `UPDATE counter SET n = $1 WHERE id = 1`, n)
				return err
			}
		}
		if err := db.InTx(ctx, set(5)); err != nil {
			t.Fatalf("InTx: %v", err)
		}
		if got := counterValue(t, db); got != 5 {
			t.Errorf("after commit n = %d, want 5", got)
		}

		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if err := set(6)(tx); err != nil {
				t.Fatal(err)
			}
			return fmt.Errorf("wrapped: %w", errBoom)
		})
		if !errors.Is(err, errBoom) {
			t.Errorf("InTx = %v, want fn's error", err)
		}
		if got := counterValue(t, db); got != 5 {
			t.Errorf("after error n = %d, want 5 (rolled back)", got)
		}

		func() {
			defer func() {
				if p := recover(); p != "kaboom" {
					t.Errorf("recovered %v, want fn's panic value", p)
				}
			}()
			db.InTx(ctx, func(tx *sql.Tx) error {
				set(7)(tx)
				panic("kaboom")
			})
		}()
		if got := counterValue(t, db); got != 5 {
			t.Errorf("after panic n = %d, want 5 (rolled back)", got)
		}
		// The connection must be free again after the panic (SQLite has one).
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := db.InTx(tctx, set(8)); err != nil {
			t.Fatalf("InTx after a panic: %v", err)
		}
		if got := counterValue(t, db); got != 8 {
			t.Errorf("n = %d, want 8", got)
		}
		if _, err := db.ExecContext(ctx, `UPDATE counter SET n = n + 1`); err != nil {
			t.Fatal(err)
		}
		if err := db.Ping(ctx); err != nil {
			t.Errorf("Ping: %v", err)
		}
	})
}

func TestInTxCanceledContext(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		db := counterDB(t, be)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := db.InTx(ctx, func(tx *sql.Tx) error { return nil })
		if !errkind.Is(err, errkind.Unavailable) {
			t.Errorf("InTx with a canceled context = %v (kind %v), want Unavailable", err, errkind.Of(err))
		}
	})
}

// TestLockSerialises increments a counter by read-modify-write from several
// goroutines; on PostgreSQL they share two store.DBs, as two processes would.
func TestLockSerialises(t *testing.T) {
	const goroutines, perGoroutine = 8, 25
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		ctx := context.Background()
		var dbs []*store.DB
		if be.Name == string(store.Postgres) {
			url := testenv.PostgresURL(t)
			for range 2 {
				db, err := store.Open(ctx, store.Config{PostgresURL: url})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				dbs = append(dbs, db)
			}
			if err := dbs[0].Migrate(ctx, "test", migrations(map[string]string{
				"0001_counter.sql": `CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counter (id, n) VALUES (1, 0);`,
			})); err != nil {
				t.Fatal(err)
			}
		} else {
			dbs = []*store.DB{counterDB(t, be)}
		}

		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			db := dbs[g%len(dbs)]
			wg.Go(func() {
				for range perGoroutine {
					err := db.InTx(ctx, func(tx *sql.Tx) error {
						if err := db.Lock(ctx, tx, "counter"); err != nil {
							return err
						}
						var n int
						if err := tx.QueryRowContext(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&n); err != nil {
							return err
						}
						time.Sleep(100 * time.Microsecond) // widen the race window
						_, err := tx.ExecContext(ctx, `UPDATE counter SET n = $1 WHERE id = 1`, n+1)
						return err
					})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("increment: %v", err)
		}
		if got := counterValue(t, dbs[0]); got != goroutines*perGoroutine {
			t.Errorf("counter = %d, want %d", got, goroutines*perGoroutine)
		}
	})
}

func TestIsUniqueViolation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		ctx := context.Background()
		db := counterDB(t, be)
		_, err := db.ExecContext(ctx, `INSERT INTO counter (id, n) VALUES (1, 1)`)
		if !store.IsUniqueViolation(err) {
			t.Errorf("IsUniqueViolation(%v) = false for a duplicate primary key", err)
		}
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO counter (id, n) VALUES ($1, $2)`, 1, 1)
			return fmt.Errorf("insert: %w", err)
		})
		if !store.IsUniqueViolation(err) {
			t.Errorf("IsUniqueViolation(%v) = false for a wrapped duplicate in a transaction", err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO counter (id, n) VALUES (2, NULL)`)
		if err == nil || store.IsUniqueViolation(err) {
			t.Errorf("IsUniqueViolation(%v) = true for a NOT NULL violation", err)
		}
		if store.IsUniqueViolation(nil) {
			t.Error("IsUniqueViolation(nil) = true")
		}
	})
}

func TestMicros(t *testing.T) {
	times := []time.Time{
		time.Unix(0, 0),
		time.Date(2026, 3, 1, 12, 30, 45, 123456000, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(2999, 1, 1, 0, 0, 0, 1000, time.FixedZone("X", 5*3600+1800)),
		time.Now().Truncate(time.Microsecond),
	}
	for _, tm := range times {
		got := store.FromMicros(store.Micros(tm))
		if !got.Equal(tm) || got.Location() != time.UTC {
			t.Errorf("FromMicros(Micros(%v)) = %v, want the same instant in UTC", tm, got)
		}
	}
	if got := store.Micros(time.Unix(1, 1500)); got != 1_000_001 {
		t.Errorf("Micros truncates: got %d, want 1000001", got)
	}
	forEachBackend(t, func(t *testing.T, be testenv.Backend) {
		ctx := context.Background()
		db := be.Open(t)
		if err := db.Migrate(ctx, "test", migrations(map[string]string{"0001_t.sql": `CREATE TABLE times (id INTEGER PRIMARY KEY, at BIGINT NOT NULL)`})); err != nil {
			t.Fatal(err)
		}
		for i, tm := range times {
			if _, err := db.ExecContext(ctx, `INSERT INTO times (id, at) VALUES ($1, $2)`, i, store.Micros(tm)); err != nil {
				t.Fatal(err)
			}
			var us int64
			if err := db.QueryRowContext(ctx, `SELECT at FROM times WHERE id = $1`, i).Scan(&us); err != nil {
				t.Fatal(err)
			}
			if got := store.FromMicros(us); !got.Equal(tm) {
				t.Errorf("stored %v, read back %v", tm, got)
			}
		}
	})
}

func TestOpenConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []store.Config{{}, {SQLitePath: "/x.db", PostgresURL: "postgres://h/db"}} {
		if _, err := store.Open(ctx, cfg); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("Open(%+v) = %v, want Invalid", cfg, err)
		}
	}
}
