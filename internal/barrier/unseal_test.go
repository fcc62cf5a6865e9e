package barrier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/barrier/shamir"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

func TestInitUnsealSubsets(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx := context.Background()
		b := newBarrier(t, open(t))
		res := initBarrier(t, b, 5, 3)
		if len(res.Shares) != 5 {
			t.Fatalf("Init gave %d shares, want 5", len(res.Shares))
		}
		st, err := b.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Status{Initialized: true, Sealed: true, Threshold: 3, Shares: 5}); st != want {
			t.Fatalf("Status after Init = %+v, want %+v", st, want)
		}
		// Something encrypted under one unsealing decrypts under every other.
		var ct []byte
		aad := AAD{Kind: "test.secret", ID: "1", Version: 1}
		for _, subset := range [][]int{{0, 1, 2}, {4, 2, 0}, {1, 3, 4}, {3, 4, 0, 1}} {
			t.Run(fmt.Sprint(subset), func(t *testing.T) {
				for i, idx := range subset[:3] {
					st, err := b.Unseal(ctx, res.Shares[idx])
					if err != nil {
						t.Fatalf("Unseal share %d: %v", idx, err)
					}
					if i < 2 && (!st.Sealed || st.Progress != i+1) {
						t.Fatalf("after %d shares: Status = %+v, want sealed with progress %d", i+1, st, i+1)
					}
					if i == 2 && (st.Sealed || st.Progress != 0 || st.KeyVersion != 1) {
						t.Fatalf("after 3 shares: Status = %+v, want unsealed at key version 1", st)
					}
				}
				// Further shares on an unsealed barrier: status, no error.
				for _, idx := range subset[3:] {
					if st, err := b.Unseal(ctx, res.Shares[idx]); err != nil || st.Sealed {
						t.Fatalf("Unseal when unsealed = %+v, %v", st, err)
					}
				}
				if ct == nil {
					if ct, err = b.Encrypt(ctx, aad, []byte("hunter2")); err != nil {
						t.Fatal(err)
					}
				}
				pt, err := b.Decrypt(ctx, aad, ct)
				if err != nil || string(pt) != "hunter2" {
					t.Fatalf("Decrypt = %q, %v", pt, err)
				}
				b.Seal()
				if !b.Sealed() {
					t.Fatal("Seal left the barrier unsealed")
				}
			})
		}
	})
}

func TestSingleShare(t *testing.T) {
	ctx := context.Background()
	b := newBarrier(t, testenv.SQLite(t))
	res := initBarrier(t, b, 1, 1)
	if len(res.Shares) != 1 {
		t.Fatalf("Init gave %d shares, want 1", len(res.Shares))
	}
	kf, err := DecodeKeyFile(res.UnsealKey)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := DecodeShare(res.Shares[0])
	if err != nil {
		t.Fatal(err)
	}
	if sh.X != 0 || string(sh.Y) != string(kf.Key) {
		t.Fatal("the single share is not the unseal key itself")
	}
	if st, err := b.Unseal(ctx, res.Shares[0]); err != nil || st.Sealed {
		t.Fatalf("Unseal with the single share = %+v, %v", st, err)
	}
}

func TestUnsealRefusals(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx := context.Background()
		b := newBarrier(t, open(t))
		res := initBarrier(t, b, 5, 3)
		other := initBarrier(t, newBarrier(t, testenv.SQLite(t)), 5, 3)
		first, _ := DecodeShare(res.Shares[0])

		// A share of a 3-of-5 split of another key, forged under this set id.
		forge := func(x int, key []byte) string {
			raw, err := shamir.Split(key, 5, 3)
			if err != nil {
				t.Fatal(err)
			}
			s, err := EncodeShare(Share{SetID: first.SetID, X: raw[x][KeySize], Y: raw[x][:KeySize]})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		otherKey := make([]byte, KeySize)
		otherKey[0] = 1
		corrupt := func(s string) string {
			i := len(s) - 10
			c := byte('a')
			if s[i] == 'a' {
				c = 'b'
			}
			return s[:i] + string(c) + s[i+1:]
		}

		if st, err := b.Unseal(ctx, res.Shares[0]); err != nil || st.Progress != 1 {
			t.Fatalf("first share: %+v, %v", st, err)
		}
		refusals := []struct {
			name, share, want string
		}{
			{"other initialization", other.Shares[1], "another initialization"},
			{"corrupted", corrupt(res.Shares[1]), "checksum"},
			{"garbage", "hello", "does not start with"},
			{"duplicate", res.Shares[0], "already submitted"},
			{"duplicate with whitespace", " " + res.Shares[0] + "\n", "already submitted"},
			{"same x, other value", forge(0, otherKey), "already submitted"},
			{"single-share form", mustEncode(t, Share{SetID: first.SetID, X: 0, Y: first.Y}), "numbered 0"},
			{"x out of range", mustEncode(t, Share{SetID: first.SetID, X: 6, Y: first.Y}), "numbered 6"},
		}
		for _, tt := range refusals {
			t.Run(tt.name, func(t *testing.T) {
				st, err := b.Unseal(ctx, tt.share)
				wantKind(t, "Unseal", err, errkind.Invalid)
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Unseal: err = %v, want it to say %q", err, tt.want)
				}
				if !st.Sealed || st.Progress != 1 {
					t.Fatalf("after refusal: Status = %+v, want sealed with progress 1 kept", st)
				}
			})
		}

		// Valid-looking shares of another key: the threshold is met, the
		// combination does not open the root key, progress resets.
		if st, err := b.Unseal(ctx, forge(1, otherKey)); err != nil || st.Progress != 2 {
			t.Fatalf("forged share 2: %+v, %v", st, err)
		}
		st, err := b.Unseal(ctx, forge(2, otherKey))
		if !errors.Is(err, ErrWrongShares) || !st.Sealed || st.Progress != 0 {
			t.Fatalf("forged threshold: Status = %+v, err = %v; want sealed, progress 0, ErrWrongShares", st, err)
		}
		if st, err := b.Status(ctx); err != nil || st.Progress != 0 || !st.Sealed {
			t.Fatalf("Status after reset = %+v, %v", st, err)
		}

		// Too few shares keep it sealed; ResetUnseal forgets them.
		b.Unseal(ctx, res.Shares[3])
		b.Unseal(ctx, res.Shares[4])
		if st, _ := b.Status(ctx); !st.Sealed || st.Progress != 2 {
			t.Fatalf("two of three shares: Status = %+v", st)
		}
		b.ResetUnseal()
		if st, _ := b.Status(ctx); st.Progress != 0 {
			t.Fatalf("after ResetUnseal: progress %d", st.Progress)
		}

		// The real shares still work.
		for _, i := range []int{4, 1, 3} {
			st, err = b.Unseal(ctx, res.Shares[i])
			if err != nil {
				t.Fatal(err)
			}
		}
		if st.Sealed {
			t.Fatalf("real shares after refusals: %+v", st)
		}
	})
}

func mustEncode(t testing.TB, s Share) string {
	t.Helper()
	text, err := EncodeShare(s)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func TestUnsealWithKeyFileRefusals(t *testing.T) {
	forBackends(t, func(t *testing.T, open func(testing.TB) *store.DB) {
		ctx := context.Background()
		db := open(t)
		b := newBarrier(t, db)
		res := initBarrier(t, b, 3, 2)
		other := initBarrier(t, newBarrier(t, testenv.SQLite(t)), 3, 2)
		kf, _ := DecodeKeyFile(res.UnsealKey)
		wrong := KeyFile{SetID: kf.SetID, Key: make([]byte, KeySize)}
		wrongFile, _ := EncodeKeyFile(wrong)
		damaged := []byte(strings.Replace(string(res.UnsealKey), "key: ", "key: 0", 1))
		damaged = append(damaged[:len(damaged)-30], damaged[len(damaged)-29:]...)
		flipped := []byte(string(res.UnsealKey))
		i := strings.Index(string(flipped), "key: ") + 8
		flipped[i] ^= 1 // a hex digit becomes another one (or a non-digit)

		before := snapshot(t, db)
		tests := []struct {
			name string
			file []byte
			want string
		}{
			{"wrong key", wrongFile, "does not decrypt the root key"},
			{"other initialization", other.UnsealKey, "another initialization"},
			{"one character changed", flipped, "key file"},
			{"damaged", damaged, "key file"},
			{"a share", []byte(res.Shares[0]), "not an unseal key file"},
			{"empty", nil, "not an unseal key file"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := b.UnsealWithKeyFile(ctx, tt.file)
				wantKind(t, "UnsealWithKeyFile", err, errkind.Invalid)
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("UnsealWithKeyFile: err = %v, want it to say %q", err, tt.want)
				}
				if !b.Sealed() {
					t.Fatal("barrier unsealed by a bad key file")
				}
			})
		}
		if snapshot(t, db) != before {
			t.Fatal("refused key files changed the stored keys")
		}
		if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil || b.Sealed() {
			t.Fatalf("good key file: %v", err)
		}
		if err := b.UnsealWithKeyFile(ctx, wrongFile); err != nil {
			t.Fatalf("key file on an unsealed barrier: err = %v, want nil", err)
		}
	})
}

func TestRestart(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			reopen := reopener(t, backend)
			b, res := unsealed(t, reopen())
			aad := AAD{Kind: "test.secret", ID: "7", Version: 2}
			ct, err := b.Encrypt(ctx, aad, []byte("kept across restarts"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Rotate(ctx); err != nil {
				t.Fatal(err)
			}
			ct2, err := b.Encrypt(ctx, aad, []byte("second"))
			if err != nil {
				t.Fatal(err)
			}

			b2 := newBarrier(t, reopen())
			st, err := b2.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Initialized || !st.Sealed || st.Threshold != 2 || st.Shares != 3 {
				t.Fatalf("Status after restart = %+v, want initialized and sealed 2-of-3", st)
			}
			for _, s := range res.Shares[1:] {
				if st, err = b2.Unseal(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			if st.Sealed || st.KeyVersion != 2 {
				t.Fatalf("Status after unseal = %+v, want unsealed at key version 2", st)
			}
			for want, c := range map[string][]byte{"kept across restarts": ct, "second": ct2} {
				pt, err := b2.Decrypt(ctx, aad, c)
				if err != nil || string(pt) != want {
					t.Fatalf("Decrypt after restart = %q, %v; want %q", pt, err, want)
				}
			}
		})
	}
}

func TestSealZeroesKeys(t *testing.T) {
	ctx := context.Background()
	b, _ := unsealed(t, testenv.SQLite(t))
	if _, err := b.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	aad := AAD{Kind: "k"}
	ct, err := b.Encrypt(ctx, aad, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	b.mu.RLock()
	held := [][]byte{b.root}
	for _, k := range b.keys {
		held = append(held, k)
	}
	b.mu.RUnlock()
	if len(held) != 3 {
		t.Fatalf("holding %d keys, want root and 2 data keys", len(held))
	}
	for _, k := range held {
		if isZero(k) {
			t.Fatal("a held key is all zero before Seal")
		}
	}
	b.Seal()
	for i, k := range held {
		if !isZero(k) {
			t.Fatalf("key %d not zeroed by Seal", i)
		}
	}
	if b.root != nil || b.keys != nil || b.current != 0 {
		t.Fatal("Seal left key references behind")
	}

	ops := map[string]func() error{
		"Encrypt":   func() error { _, err := b.Encrypt(ctx, aad, []byte("x")); return err },
		"Decrypt":   func() error { _, err := b.Decrypt(ctx, aad, ct); return err },
		"Sign":      func() error { _, err := b.Sign(ctx, "p", []byte("x")); return err },
		"PublicKey": func() error { _, err := b.PublicKey(ctx, "p"); return err },
		"MAC":       func() error { _, err := b.MAC(ctx, "p", []byte("x")); return err },
		"Rotate":    func() error { _, err := b.Rotate(ctx); return err },
		"Rewrap":    func() error { _, _, err := b.Rewrap(ctx, aad, ct); return err },
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			err := op()
			if !errors.Is(err, ErrSealed) || !errkind.Is(err, errkind.Sealed) {
				t.Fatalf("%s when sealed: err = %v, want ErrSealed", name, err)
			}
		})
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
