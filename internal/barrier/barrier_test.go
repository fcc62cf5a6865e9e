package barrier

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// newBarrier returns a Barrier on db.
func newBarrier(t testing.TB, db *store.DB) *Barrier {
	t.Helper()
	b, err := New(context.Background(), Config{DB: db})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// initBarrier initializes b with a shares-of-threshold split.
func initBarrier(t testing.TB, b *Barrier, shares, threshold int) InitResult {
	t.Helper()
	res, err := b.Init(context.Background(), InitOptions{Shares: shares, Threshold: threshold})
	if err != nil {
		t.Fatalf("Init(%d, %d): %v", shares, threshold, err)
	}
	return res
}

// unsealed returns an initialized, unsealed Barrier on db.
func unsealed(t testing.TB, db *store.DB) (*Barrier, InitResult) {
	t.Helper()
	b := newBarrier(t, db)
	res := initBarrier(t, b, 3, 2)
	if err := b.UnsealWithKeyFile(context.Background(), res.UnsealKey); err != nil {
		t.Fatalf("UnsealWithKeyFile: %v", err)
	}
	return b, res
}

// forBackends runs f once per store backend.
func forBackends(t *testing.T, f func(t *testing.T, open func(testing.TB) *store.DB)) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) { f(t, be.Open) })
	}
}

// reopener returns a function that opens a new handle on one database,
// closing the previous handle first (SQLite admits one process at a time).
func reopener(t *testing.T, backend string) func() *store.DB {
	t.Helper()
	var cfg store.Config
	if backend == "sqlite" {
		cfg.SQLitePath = filepath.Join(t.TempDir(), "warder.db")
	} else {
		cfg.PostgresURL = testenv.PostgresURL(t)
	}
	var prev *store.DB
	t.Cleanup(func() {
		if prev != nil {
			prev.Close()
		}
	})
	return func() *store.DB {
		if prev != nil {
			prev.Close()
		}
		db, err := store.Open(context.Background(), cfg)
		if err != nil {
			t.Fatalf("store.Open: %v", err)
		}
		prev = db
		return db
	}
}

// snapshot returns the barrier's stored rows as text.
func snapshot(t testing.TB, db *store.DB) string {
	t.Helper()
	var sb strings.Builder
	for _, q := range []string{
		`SELECT set_id, shares, threshold, root_key_ct, created_at FROM barrier_root`,
		`SELECT version, key_ct, created_at FROM barrier_keys ORDER BY version`,
	} {
		rows, err := db.QueryContext(context.Background(), q)
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			for _, v := range vals {
				if b, ok := v.([]byte); ok {
					v = hex.EncodeToString(b)
				}
				fmt.Fprintf(&sb, "%v|", v)
			}
			sb.WriteString("\n")
		}
		rows.Close()
	}
	return sb.String()
}

func wantKind(t testing.TB, what string, err error, k errkind.Kind) {
	t.Helper()
	if !errkind.Is(err, k) {
		t.Fatalf("%s: err = %v (kind %v), want kind %v", what, err, errkind.Of(err), k)
	}
}

func TestNewConfig(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Config{}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("New without DB: err = %v, want Invalid", err)
	}
	if _, err := New(ctx, Config{DB: testenv.SQLite(t), RewrapInterval: -1}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("New with negative interval: err = %v, want Invalid", err)
	}
}

func TestUninitialized(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx := context.Background()
		b := newBarrier(t, open(t))
		st, err := b.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Initialized || !st.Sealed {
			t.Fatalf("Status = %+v, want uninitialized and sealed", st)
		}
		if _, err := b.Unseal(ctx, "wsh1-x"); !errors.Is(err, ErrNotInitialized) {
			t.Errorf("Unseal: err = %v, want ErrNotInitialized", err)
		}
		if err := b.UnsealWithKeyFile(ctx, nil); !errors.Is(err, ErrNotInitialized) {
			t.Errorf("UnsealWithKeyFile: err = %v, want ErrNotInitialized", err)
		}
		if _, err := b.Encrypt(ctx, AAD{Kind: "k"}, nil); !errors.Is(err, ErrSealed) {
			t.Errorf("Encrypt: err = %v, want ErrSealed", err)
		}
	})
}

func TestInitValidation(t *testing.T) {
	b := newBarrier(t, testenv.SQLite(t))
	tests := []struct{ shares, threshold int }{
		{0, 0}, {0, 1}, {1, 0}, {1, 2}, {3, 1}, {3, 4}, {256, 2}, {-1, -1}, {2, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-of-%d", tt.threshold, tt.shares), func(t *testing.T) {
			_, err := b.Init(context.Background(), InitOptions{Shares: tt.shares, Threshold: tt.threshold})
			wantKind(t, "Init", err, errkind.Invalid)
		})
	}
	st, err := b.Status(context.Background())
	if err != nil || st.Initialized {
		t.Fatalf("after refused Inits: Status = %+v, %v; want uninitialized", st, err)
	}
}

func TestInitTwice(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		db := open(t)
		b := newBarrier(t, db)
		initBarrier(t, b, 3, 2)
		before := snapshot(t, db)
		_, err := b.Init(context.Background(), InitOptions{Shares: 3, Threshold: 2})
		if !errors.Is(err, ErrAlreadyInitialized) || !errkind.Is(err, errkind.Conflict) {
			t.Fatalf("second Init: err = %v, want ErrAlreadyInitialized (Conflict)", err)
		}
		// Another Barrier on the same database agrees.
		if _, err := newBarrier(t, db).Init(context.Background(), InitOptions{Shares: 1, Threshold: 1}); !errors.Is(err, ErrAlreadyInitialized) {
			t.Fatalf("Init from a second Barrier: err = %v", err)
		}
		if snapshot(t, db) != before {
			t.Fatal("refused Init changed the stored keys")
		}
	})
}

func TestInitInTx(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx := context.Background()
		db := open(t)
		if _, err := db.ExecContext(ctx, `CREATE TABLE test_tokens (id INTEGER PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		b := newBarrier(t, db)
		boom := errors.New("token store down")
		_, err := b.Init(ctx, InitOptions{Shares: 3, Threshold: 2, InTx: func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO test_tokens (id) VALUES (1)`); err != nil {
				return err
			}
			return boom
		}})
		if !errors.Is(err, boom) {
			t.Fatalf("Init with failing InTx: err = %v, want it to wrap the callback's error", err)
		}
		var n int
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM test_tokens`).Scan(&n)
		if st, _ := b.Status(ctx); st.Initialized || n != 0 {
			t.Fatalf("after failed InTx: initialized=%v, tokens=%d; want neither", st.Initialized, n)
		}
		_, err = b.Init(ctx, InitOptions{Shares: 3, Threshold: 2, InTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO test_tokens (id) VALUES (1)`)
			return err
		}})
		if err != nil {
			t.Fatal(err)
		}
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM test_tokens`).Scan(&n)
		if st, _ := b.Status(ctx); !st.Initialized || n != 1 {
			t.Fatalf("after InTx: initialized=%v, tokens=%d; want both", st.Initialized, n)
		}
	})
}

func TestConcurrentInitPostgres(t *testing.T) {
	url := testenv.PostgresURL(t)
	const procs = 4
	var barriers []*Barrier
	for i := 0; i < procs; i++ {
		db, err := store.Open(context.Background(), store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		barriers = append(barriers, newBarrier(t, db))
	}
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for i, b := range barriers {
		wg.Go(func() {
			_, errs[i] = b.Init(context.Background(), InitOptions{Shares: 3, Threshold: 2})
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrAlreadyInitialized):
			t.Errorf("losing Init: err = %v, want ErrAlreadyInitialized", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent Inits succeeded, want exactly 1", wins, procs)
	}
}
