// Package barrier holds Warder's keys and is the only package that touches
// them in plaintext. Everything else asks it to encrypt, decrypt, sign or
// MAC.
//
// Keys form an envelope:
//
//   - The unseal key (32 random bytes) exists only outside the server: split
//     into Shamir shares for the operators, or whole in a key file.
//   - The root key (32 random bytes) is stored in barrier_root, encrypted
//     under the unseal key. Keys for signing and MACs are derived from it by
//     HKDF, per purpose.
//   - Data keys, versions 1..n, are stored in barrier_keys, encrypted under
//     the root key. The highest version encrypts new data; all versions
//     decrypt. Rotate adds a version; registered Rewrappers move records to
//     it.
//
// A Barrier starts sealed: it holds no key until enough shares (or the key
// file) have been submitted. Seal forgets every key again. Several
// processes may share one PostgreSQL database; each is unsealed on its own
// and learns data keys rotated by the others when it next reloads its
// keyring (every RewrapInterval, and whenever it meets a version it lacks).
package barrier

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/barrier/shamir"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

//go:embed migrations
var migrations embed.FS

// Errors callers branch on. Compare with errors.Is; errkind.Of gives their kind.
var (
	// ErrSealed is returned by every key operation while the barrier is sealed.
	ErrSealed = errkind.New(errkind.Sealed, "barrier: sealed")
	// ErrNotInitialized is returned by Unseal and UnsealWithKeyFile before Init.
	ErrNotInitialized = errkind.New(errkind.Invalid, "barrier: not initialized")
	// ErrAlreadyInitialized is returned by Init on an initialized database.
	ErrAlreadyInitialized = errkind.New(errkind.Conflict, "barrier: already initialized")
	// ErrWrongShares is returned by Unseal when the threshold of shares was
	// met but they do not rebuild the unseal key. Progress is reset.
	ErrWrongShares = errkind.New(errkind.Invalid, "barrier: the shares do not reconstruct the unseal key; unseal progress reset")
	// ErrWrongKeyFile is returned by UnsealWithKeyFile when a well-formed
	// key file of this initialization does not decrypt the root key.
	ErrWrongKeyFile = errkind.New(errkind.Invalid, "barrier: the key file does not decrypt the root key: it is not this server's unseal key")
	// ErrDecrypt is returned by Decrypt when a ciphertext fails
	// authentication: it was altered, or it belongs to another record
	// (another kind, id or version than the AAD given).
	ErrDecrypt = errkind.New(errkind.Other, "barrier: ciphertext does not authenticate: it is damaged or belongs to another record")
)

// Config configures a Barrier.
type Config struct {
	// DB is the database holding the barrier's tables. Required.
	DB *store.DB
	// Logger receives operational logs; never key material. Nil discards.
	Logger *slog.Logger
	// Now is the clock, used for record timestamps. Nil means time.Now.
	Now func() time.Time
	// RewrapInterval is how often Run reloads the keyring and rewraps
	// records under old data keys. Zero means one minute.
	RewrapInterval time.Duration
}

// Barrier guards Warder's keys. It is safe for concurrent use.
//
// Lock order: unsealMu, then reloadMu, then mu. regMu is never held with another.
type Barrier struct {
	db             *store.DB
	log            *slog.Logger
	now            func() time.Time
	rewrapInterval time.Duration

	// rewrapNow wakes Run after Rotate. Buffered (1); senders never block;
	// never closed.
	rewrapNow chan struct{}

	// unsealMu serialises Unseal, UnsealWithKeyFile, ResetUnseal, Seal and
	// Init, and protects the following.
	unsealMu sync.Mutex
	progress progress

	// reloadMu serialises keyring reloads, so that many Decrypts meeting one
	// unknown version read the database once.
	reloadMu sync.Mutex

	// mu protects the key material below. Users of a key hold the read
	// lock for as long as they use its bytes, so Seal (write lock) never
	// zeroes a key in use. Nothing holding mu does I/O, except that Rotate
	// holds the read lock briefly inside its transaction.
	mu      sync.RWMutex
	root    []byte            // the root key; nil when sealed
	setID   SetID             // the initialization the keys belong to
	keys    map[uint32][]byte // data keys by version; nil when sealed
	current uint32            // the version new data is encrypted under

	// regMu protects rewrappers.
	regMu      sync.Mutex
	rewrappers map[string]Rewrapper
}

// progress is an unseal attempt in progress: the shares submitted so far.
type progress struct {
	setID  SetID
	shares []Share
}

// reset forgets the submitted shares, zeroing them.
func (p *progress) reset() {
	for _, s := range p.shares {
		clear(s.Y)
	}
	*p = progress{}
}

// New returns a sealed Barrier on cfg.DB, creating or updating its tables.
func New(ctx context.Context, cfg Config) (*Barrier, error) {
	if cfg.DB == nil {
		return nil, errkind.New(errkind.Invalid, "barrier: no database configured")
	}
	if cfg.RewrapInterval < 0 {
		return nil, errkind.New(errkind.Invalid, "barrier: negative rewrap interval %v", cfg.RewrapInterval)
	}
	b := &Barrier{
		db:             cfg.DB,
		log:            cfg.Logger,
		now:            cfg.Now,
		rewrapInterval: cfg.RewrapInterval,
		rewrapNow:      make(chan struct{}, 1),
		rewrappers:     map[string]Rewrapper{},
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.rewrapInterval == 0 {
		b.rewrapInterval = time.Minute
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("barrier: migrations: %w", err)
	}
	if err := b.db.Migrate(ctx, "barrier", sub); err != nil {
		return nil, fmt.Errorf("barrier: %w", err)
	}
	return b, nil
}

// Status describes a barrier.
type Status struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Progress    int    `json:"progress"` // shares submitted so far in this unseal attempt
	Threshold   int    `json:"threshold"`
	Shares      int    `json:"shares"`
	KeyVersion  uint32 `json:"key_version,omitempty"` // current data-key version, only when unsealed
}

// Status reports whether the barrier is initialized and sealed, and the
// progress of the current unseal attempt.
func (b *Barrier) Status(ctx context.Context) (Status, error) {
	root, ok, err := b.readRoot(ctx)
	if err != nil {
		return Status{}, err
	}
	b.unsealMu.Lock()
	defer b.unsealMu.Unlock()
	if !ok {
		return Status{Sealed: b.Sealed()}, nil
	}
	return b.statusLocked(root), nil
}

// statusLocked builds the status of an initialized barrier. b.unsealMu is held.
func (b *Barrier) statusLocked(root rootRow) Status {
	st := Status{Initialized: true, Sealed: true, Threshold: root.threshold, Shares: root.shares}
	if b.progress.setID == root.setID {
		st.Progress = len(b.progress.shares)
	}
	b.mu.RLock()
	if b.root != nil {
		st.Sealed = false
		st.KeyVersion = b.current
	}
	b.mu.RUnlock()
	return st
}

// Sealed reports whether the barrier holds no keys.
func (b *Barrier) Sealed() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.root == nil
}

// InitOptions are the parameters of Init.
type InitOptions struct {
	// Shares is the number of unseal shares to make, 1..255.
	Shares int
	// Threshold is how many shares unseal: 2..Shares, or 1 when Shares is
	// 1, in which case the single share holds the unseal key itself.
	Threshold int
	// InTx, if set, runs inside the transaction that records the new root
	// key, so that what the caller creates with it (the first admin token,
	// the audit event) commits with it or not at all. On SQLite it must use
	// only tx. An error from it aborts Init.
	InTx func(ctx context.Context, tx *sql.Tx) error
}

// InitResult is what Init hands out once. It holds secrets: the caller
// shows or stores them and keeps no other copy.
type InitResult struct {
	Shares    []string // encoded shares, see EncodeShare
	UnsealKey []byte   // the contents of an unseal key file, see EncodeKeyFile
}

// Init creates the root key and the first data key and returns the unseal
// shares and key file. The barrier stays sealed. Init commits everything or
// nothing: the shares are made before the transaction commits, so a
// committed root key always has shares. Of several processes racing to
// initialize one database, exactly one succeeds; the others get
// ErrAlreadyInitialized.
func (b *Barrier) Init(ctx context.Context, opts InitOptions) (InitResult, error) {
	if opts.Shares < 1 || opts.Shares > shamir.MaxParts {
		return InitResult{}, errkind.New(errkind.Invalid, "barrier: shares must be between 1 and %d, not %d", shamir.MaxParts, opts.Shares)
	}
	switch {
	case opts.Threshold < 1 || opts.Threshold > opts.Shares:
		return InitResult{}, errkind.New(errkind.Invalid, "barrier: threshold must be between 1 and the number of shares (%d), not %d", opts.Shares, opts.Threshold)
	case opts.Threshold == 1 && opts.Shares > 1:
		return InitResult{}, errkind.New(errkind.Invalid, "barrier: threshold 1 is allowed only with a single share: %d shares that each unseal alone are %d copies of the key", opts.Shares, opts.Shares)
	}

	var setID SetID
	unsealKey, rootKey, dataKey := make([]byte, KeySize), make([]byte, KeySize), make([]byte, KeySize)
	defer func() { clear(unsealKey); clear(rootKey); clear(dataKey) }()
	for _, k := range [][]byte{setID[:], unsealKey, rootKey, dataKey} {
		if _, err := rand.Read(k); err != nil {
			return InitResult{}, fmt.Errorf("barrier: read random key: %w", err)
		}
	}
	rootCT, err := sealBox(unsealKey, rootKey, rootAAD(setID))
	if err != nil {
		return InitResult{}, err
	}
	keyCT, err := sealBox(rootKey, dataKey, dataKeyAAD(setID, 1))
	if err != nil {
		return InitResult{}, err
	}
	res, err := makeInitResult(setID, unsealKey, opts.Shares, opts.Threshold)
	if err != nil {
		return InitResult{}, err
	}

	b.unsealMu.Lock()
	defer b.unsealMu.Unlock()
	now := store.Micros(b.now())
	err = b.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := b.db.Lock(ctx, tx, "barrier.init"); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM barrier_root`).Scan(&n); err != nil {
			return fmt.Errorf("barrier: read root key: %w", err)
		}
		if n > 0 {
			return ErrAlreadyInitialized
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO barrier_root (id, set_id, shares, threshold, root_key_ct, created_at) VALUES (1, $1, $2, $3, $4, $5)`,
			setID[:], opts.Shares, opts.Threshold, rootCT, now); err != nil {
			if store.IsUniqueViolation(err) {
				return ErrAlreadyInitialized
			}
			return fmt.Errorf("barrier: store root key: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO barrier_keys (version, key_ct, created_at) VALUES (1, $1, $2)`, keyCT, now); err != nil {
			return fmt.Errorf("barrier: store data key: %w", err)
		}
		if opts.InTx != nil {
			if err := opts.InTx(ctx, tx); err != nil {
				return fmt.Errorf("barrier: init: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		clear(res.UnsealKey)
		return InitResult{}, err
	}
	b.progress.reset()
	b.log.InfoContext(ctx, "barrier: initialized", "set_id", setID.String(), "shares", opts.Shares, "threshold", opts.Threshold)
	return res, nil
}

// makeInitResult splits unsealKey into shares and encodes the key file.
func makeInitResult(setID SetID, unsealKey []byte, shares, threshold int) (InitResult, error) {
	var parts []Share
	if threshold == 1 {
		parts = []Share{{SetID: setID, X: 0, Y: unsealKey}}
	} else {
		raw, err := shamir.Split(unsealKey, shares, threshold)
		if err != nil {
			return InitResult{}, fmt.Errorf("barrier: split unseal key: %w", err)
		}
		defer func() {
			for _, r := range raw {
				clear(r)
			}
		}()
		for _, r := range raw {
			parts = append(parts, Share{SetID: setID, X: r[KeySize], Y: r[:KeySize]})
		}
	}
	var res InitResult
	for _, p := range parts {
		s, err := EncodeShare(p)
		if err != nil {
			return InitResult{}, err
		}
		res.Shares = append(res.Shares, s)
	}
	kf, err := EncodeKeyFile(KeyFile{SetID: setID, Key: unsealKey})
	if err != nil {
		return InitResult{}, err
	}
	res.UnsealKey = kf
	return res, nil
}

// rootRow is the stored barrier_root row.
type rootRow struct {
	setID     SetID
	shares    int
	threshold int
	rootCT    []byte
}

// readRoot reads the root row; ok is false before Init.
func (b *Barrier) readRoot(ctx context.Context) (row rootRow, ok bool, err error) {
	var setID []byte
	err = b.db.QueryRowContext(ctx,
		`SELECT set_id, shares, threshold, root_key_ct FROM barrier_root WHERE id = 1`).
		Scan(&setID, &row.shares, &row.threshold, &row.rootCT)
	if errors.Is(err, sql.ErrNoRows) {
		return rootRow{}, false, nil
	}
	if err != nil {
		return rootRow{}, false, fmt.Errorf("barrier: read root key: %w", err)
	}
	if len(setID) != len(row.setID) {
		return rootRow{}, false, fmt.Errorf("barrier: stored set id is %d bytes, want %d", len(setID), len(row.setID))
	}
	copy(row.setID[:], setID)
	return row, true, nil
}
