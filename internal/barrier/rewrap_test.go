package barrier

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// secretTable is a test table of encrypted records with its Rewrapper, as
// a domain package would have.
type secretTable struct {
	db *store.DB
}

func newSecretTable(t testing.TB, db *store.DB) *secretTable {
	t.Helper()
	blob := "BLOB"
	if db.Kind() == store.Postgres {
		blob = "BYTEA"
	}
	if _, err := db.ExecContext(context.Background(),
		`CREATE TABLE test_secrets (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, secret_ct `+blob+` NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return &secretTable{db: db}
}

func secretAAD(id, version int64) AAD {
	return AAD{Kind: "test.secret", ID: strconv.FormatInt(id, 10), Version: version}
}

func (s *secretTable) put(t testing.TB, b *Barrier, id int64, plaintext string) {
	t.Helper()
	ct, err := b.Encrypt(context.Background(), secretAAD(id, 1), []byte(plaintext))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(context.Background(),
		`INSERT INTO test_secrets (id, version, secret_ct) VALUES ($1, 1, $2)`, id, ct); err != nil {
		t.Fatal(err)
	}
}

// versions returns the key version of every row, by id.
func (s *secretTable) versions(t testing.TB) map[int64]uint32 {
	t.Helper()
	rows, err := s.db.QueryContext(context.Background(), `SELECT id, secret_ct FROM test_secrets`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]uint32{}
	for rows.Next() {
		var id int64
		var ct []byte
		if err := rows.Scan(&id, &ct); err != nil {
			t.Fatal(err)
		}
		v, err := KeyVersion(ct)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = v
	}
	return out
}

// Rewrap implements Rewrapper.
func (s *secretTable) Rewrap(ctx context.Context, b *Barrier) (int, error) {
	type row struct {
		id, version int64
		ct          []byte
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, version, secret_ct FROM test_secrets ORDER BY id`)
	if err != nil {
		return 0, err
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.version, &r.ct); err != nil {
			rows.Close()
			return 0, err
		}
		all = append(all, r)
	}
	rows.Close()
	n := 0
	for _, r := range all {
		ct, changed, err := b.Rewrap(ctx, secretAAD(r.id, r.version), r.ct)
		if err != nil {
			return n, fmt.Errorf("record %d: %w", r.id, err)
		}
		if !changed {
			continue
		}
		if _, err := s.db.ExecContext(ctx, `UPDATE test_secrets SET secret_ct = $1 WHERE id = $2`, ct, r.id); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func TestRotateAndRewrap(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx := context.Background()
		db := open(t)
		b, _ := unsealed(t, db)
		tbl := newSecretTable(t, db)
		b.Register("test_secrets", tbl)
		for i := int64(1); i <= 5; i++ {
			tbl.put(t, b, i, fmt.Sprint("secret ", i))
		}
		v, err := b.Rotate(ctx)
		if err != nil || v != 2 {
			t.Fatalf("Rotate = %d, %v; want 2", v, err)
		}
		if st, _ := b.Status(ctx); st.KeyVersion != 2 {
			t.Fatalf("Status.KeyVersion = %d, want 2", st.KeyVersion)
		}
		tbl.put(t, b, 6, "secret 6")
		want := map[int64]uint32{1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2}
		if got := tbl.versions(t); !mapsEqual(got, want) {
			t.Fatalf("versions after Rotate = %v, want %v", got, want)
		}
		// Old ciphertexts still decrypt.
		if err := checkSecrets(ctx, b, tbl); err != nil {
			t.Fatal(err)
		}

		if v, err := b.Rotate(ctx); err != nil || v != 3 {
			t.Fatalf("second Rotate = %d, %v; want 3", v, err)
		}
		n, err := b.RewrapAll(ctx)
		if err != nil || n != 6 {
			t.Fatalf("RewrapAll = %d, %v; want 6", n, err)
		}
		for id, v := range tbl.versions(t) {
			if v != 3 {
				t.Errorf("record %d under version %d after RewrapAll, want 3", id, v)
			}
		}
		if err := checkSecrets(ctx, b, tbl); err != nil {
			t.Fatal(err)
		}
		if n, err := b.RewrapAll(ctx); err != nil || n != 0 {
			t.Fatalf("second RewrapAll = %d, %v; want 0", n, err)
		}
	})
}

func checkSecrets(ctx context.Context, b *Barrier, tbl *secretTable) error {
	rows, err := tbl.db.QueryContext(ctx, `SELECT id, version, secret_ct FROM test_secrets`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, version int64
		var ct []byte
		if err := rows.Scan(&id, &version, &ct); err != nil {
			return err
		}
		pt, err := b.Decrypt(ctx, secretAAD(id, version), ct)
		if err != nil {
			return fmt.Errorf("record %d: %w", id, err)
		}
		if want := fmt.Sprint("secret ", id); string(pt) != want {
			return fmt.Errorf("record %d decrypts to %q, want %q", id, pt, want)
		}
	}
	return rows.Err()
}

func mapsEqual(a, b map[int64]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestRunRewrapsAfterRotate(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		db := open(t)
		// An hour: only Rotate's wake-up can make Run act within the test.
		b, err := New(ctx, Config{DB: db, RewrapInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		res := initBarrier(t, b, 1, 1)
		if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
			t.Fatal(err)
		}
		tbl := newSecretTable(t, db)
		b.Register("test_secrets", tbl)
		for i := int64(1); i <= 3; i++ {
			tbl.put(t, b, i, fmt.Sprint("secret ", i))
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			b.Run(ctx)
		}()
		defer func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("Run did not return after its context was cancelled")
			}
		}()
		if _, err := b.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			vs := tbl.versions(t)
			if vs[1] == 2 && vs[2] == 2 && vs[3] == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Run did not rewrap after Rotate: versions %v", vs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestTwoProcesses runs two Barriers on one PostgreSQL database, as two
// server processes: each learns data keys the other rotated to.
func TestTwoProcesses(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	open := func() *store.DB {
		db, err := store.Open(ctx, store.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	a, res := unsealed(t, open())
	b := newBarrier(t, open())
	if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
		t.Fatal(err)
	}
	aad := AAD{Kind: "test.secret", ID: "1"}
	if v, err := a.Rotate(ctx); err != nil || v != 2 {
		t.Fatalf("Rotate = %d, %v", v, err)
	}
	ct, err := a.Encrypt(ctx, aad, []byte("from a"))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := KeyVersion(ct); v != 2 {
		t.Fatalf("a encrypts under version %d, want 2", v)
	}
	if st, _ := b.Status(ctx); st.KeyVersion != 1 {
		t.Fatalf("b at key version %d before it reloads, want 1", st.KeyVersion)
	}
	pt, err := b.Decrypt(ctx, aad, ct)
	if err != nil || string(pt) != "from a" {
		t.Fatalf("b decrypts a's record under a version rotated after b's start: %q, %v", pt, err)
	}
	if st, _ := b.Status(ctx); st.KeyVersion != 2 {
		t.Fatalf("b at key version %d after reload, want 2", st.KeyVersion)
	}

	// Concurrent rotations from both processes get distinct versions.
	var mu sync.Mutex
	var got []uint32
	var wg sync.WaitGroup
	for _, bar := range []*Barrier{a, b, a, b, a, b} {
		wg.Go(func() {
			v, err := bar.Rotate(ctx)
			if err != nil {
				t.Errorf("concurrent Rotate: %v", err)
				return
			}
			mu.Lock()
			got = append(got, v)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(got)
	if want := []uint32{3, 4, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("concurrent Rotate versions = %v, want %v", got, want)
	}
	for _, bar := range []*Barrier{a, b} {
		if err := bar.reloadKeyring(ctx); err != nil {
			t.Fatal(err)
		}
		if st, _ := bar.Status(ctx); st.KeyVersion != 8 {
			t.Fatalf("key version after reload = %d, want 8", st.KeyVersion)
		}
	}
}

func TestRewrapAllReportsErrors(t *testing.T) {
	ctx := context.Background()
	b, _ := unsealed(t, testenv.SQLite(t))
	b.Register("a_broken", rewrapFunc(func(context.Context, *Barrier) (int, error) { return 1, fmt.Errorf("disk on fire") }))
	b.Register("b_fine", rewrapFunc(func(context.Context, *Barrier) (int, error) { return 2, nil }))
	n, err := b.RewrapAll(ctx)
	if n != 3 || err == nil || !containsAll(err.Error(), "a_broken", "disk on fire") {
		t.Fatalf("RewrapAll = %d, %v; want 3 and a_broken's error", n, err)
	}
}

type rewrapFunc func(context.Context, *Barrier) (int, error)

func (f rewrapFunc) Rewrap(ctx context.Context, b *Barrier) (int, error) { return f(ctx, b) }

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
