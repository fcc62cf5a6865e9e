// Package audit keeps Warder's tamper-evident audit trail.
//
// Every state-changing API request and every authentication or
// authorization decision appends an Event. Events never carry secret values;
// callers put keyed HMACs of them in Details instead.
//
// # Chain
//
// Events are numbered from 1 without gaps (Seq) and hash-chained:
//
//	Hash = SHA-256(PrevHash bytes || Canonical(event))
//
// where PrevHash is the Hash of the event before, and for event 1 the genesis
// value GenesisHash (64 "0" characters, i.e. 32 zero bytes). Hashes are
// written as lowercase hex. Canonical documents the encoding.
//
// Periodically the head of the chain is sealed by a Checkpoint: an Ed25519
// signature, made by the barrier's key, over CheckpointMessage(seq, hash,
// time). Verify recomputes the chain and checks every checkpoint, so that a
// change, deletion, insertion or reordering of events up to the last
// checkpoint is detected by anyone holding the public key. What lies after
// the last checkpoint is protected by the chain only: someone able to write
// the database could append well-formed events after it, or delete events
// after it, undetected until the next checkpoint signs the head. Deleting
// checkpoints to widen that window is caught by age: Verify with a key
// reports events left unsigned for longer than 2×CheckpointInterval (or more
// than 2×CheckpointEvery of them), and Checkpoint refuses to sign once the
// checkpoints it wrote are gone.
//
// # Durability
//
// Append fails closed: it returns only after the event is committed, and
// returns an error if it cannot be, in which case the caller must refuse the
// operation it was about to perform. Concurrent Appends are group-committed:
// one writer goroutine writes each batch in one transaction. Across processes
// sharing one PostgreSQL database the chain is serialised by the store's
// "audit" lock; the seq primary key is a second guard against a fork.
package audit

import (
	"context"
	"crypto/ed25519"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// The outcomes an Event may record.
const (
	OutcomeSuccess = "success" // a state-changing request was carried out
	OutcomeFailure = "failure" // a state-changing request failed
	OutcomeAllow   = "allow"   // an authentication/authorization decision allowed
	OutcomeDeny    = "deny"    // an authentication/authorization decision denied
)

// GenesisHash is the PrevHash of event 1: the hex form of 32 zero bytes.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Size limits enforced by Append, AppendTx and DecodeEvent.
const (
	MaxFieldBytes = 1024 // each string field, and each detail value
	MaxDetailKey  = 128  // each detail key
	MaxDetails    = 32   // entries in Details
)

// Event is one entry of the audit trail.
type Event struct {
	Seq       int64             `json:"seq"`
	Time      time.Time         `json:"time"`  // UTC, microsecond precision (store.Micros)
	Actor     string            `json:"actor"` // e.g. "user:alice", "machine:ci", "system:dev", "anonymous"
	Action    string            `json:"action"`
	Resource  string            `json:"resource,omitempty"`
	Outcome   string            `json:"outcome"`          // one of the Outcome constants
	Source    string            `json:"source,omitempty"` // client address
	RequestID string            `json:"request_id,omitempty"`
	Details   map[string]string `json:"details,omitempty"`
	PrevHash  string            `json:"prev_hash"` // hex SHA-256 of the previous event
	Hash      string            `json:"hash"`      // hex SHA-256(prev hash bytes || Canonical(event))
}

// Signer signs checkpoints. The barrier implements it; Sign returns an
// errkind.Sealed error while the barrier is sealed, and checkpoints are then
// skipped while appends go on.
type Signer interface {
	Sign(ctx context.Context, msg []byte) ([]byte, error)
	PublicKey(ctx context.Context) (ed25519.PublicKey, error)
}

// Config configures a Log. It is not modified by New.
type Config struct {
	// DB holds the audit tables. Required.
	DB *store.DB
	// Signer signs checkpoints. Nil: no checkpoints are written.
	Signer Signer
	// Logger receives operational logs (never events). Nil: discard.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// CheckpointInterval is how often Run writes a checkpoint when new
	// events exist. Zero: 1 minute. Verify with a key reports events left
	// unsigned for more than twice this long.
	CheckpointInterval time.Duration
	// CheckpointEvery makes Run also write a checkpoint once this many events
	// were appended through this Log since the last one. Zero: 10000.
	// Verify with a key reports more than twice this many unsigned events.
	CheckpointEvery int
	// MaxBatch is the most events group-committed in one transaction.
	// Zero: 256.
	MaxBatch int
}

// Log is the audit trail. It is safe for concurrent use.
type Log struct {
	db       *store.DB
	signer   Signer
	logger   *slog.Logger
	now      func() time.Time
	interval time.Duration
	every    int
	maxBatch int

	reqs chan *appendReq // pending Appends; closed by Close, drained by the writer
	done chan struct{}   // closed by the writer goroutine when it ends
	kick chan struct{}   // tells Run that CheckpointEvery events were appended

	// mu protects closed; Append sends on reqs holding the read lock, so
	// Close (write lock) never closes reqs under a sender.
	mu     sync.RWMutex
	closed bool

	// cpMu serialises Checkpoint within this process and protects signed:
	// the last checkpoint this Log wrote, or read and found validly signed
	// (zero: none yet). Checkpoint refuses to go on when the stored
	// checkpoints no longer reach it.
	cpMu   sync.Mutex
	signed Checkpoint

	verifyMu sync.Mutex    // serialises Verify, which holds a read connection throughout
	exports  chan struct{} // one token per running Export; capacity maxExports
	since    atomic.Int64  // events appended through this Log since its last checkpoint
}

// maxExports is how many Exports one Log runs at once; more are refused
// with ErrTooManyExports rather than queued behind a slow reader.
const maxExports = 2

//go:embed migrations
var migrationFiles embed.FS

// New migrates the audit tables and starts the writer goroutine. The caller
// must Close the Log.
func New(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.DB == nil {
		return nil, errkind.New(errkind.Invalid, "audit: no database configured")
	}
	if cfg.CheckpointInterval < 0 || cfg.CheckpointEvery < 0 || cfg.MaxBatch < 0 {
		return nil, errkind.New(errkind.Invalid, "audit: negative checkpoint interval, checkpoint count or batch size")
	}
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("audit: migrations: %w", err)
	}
	if err := cfg.DB.Migrate(ctx, "audit", sub); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{
		db:       cfg.DB,
		signer:   cfg.Signer,
		logger:   cfg.Logger,
		now:      cfg.Now,
		interval: cfg.CheckpointInterval,
		every:    cfg.CheckpointEvery,
		maxBatch: cfg.MaxBatch,
		done:     make(chan struct{}),
		kick:     make(chan struct{}, 1),
		exports:  make(chan struct{}, maxExports),
	}
	if l.logger == nil {
		l.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.interval == 0 {
		l.interval = time.Minute
	}
	if l.every == 0 {
		l.every = 10000
	}
	if l.maxBatch == 0 {
		l.maxBatch = 256
	}
	l.reqs = make(chan *appendReq, l.maxBatch)
	go l.writer()
	return l, nil
}

// Close stops accepting Appends, waits until those already accepted are
// written (or failed), and stops the writer goroutine. Append after Close
// returns an error. Close does not close the DB.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.mu.Unlock()
	<-l.done
	return nil
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errkind.New(errkind.Unavailable, "audit: log is closed")

// validate checks ev as given by a caller of Append or AppendTx and returns
// it normalised: Time in UTC truncated to microseconds, empty Details as nil.
func validate(ev Event) (Event, error) {
	if ev.Action == "" {
		return ev, errkind.New(errkind.Invalid, "audit: event has no action")
	}
	switch ev.Outcome {
	case OutcomeSuccess, OutcomeFailure, OutcomeAllow, OutcomeDeny:
	default:
		return ev, errkind.New(errkind.Invalid, "audit: outcome %q is not one of success, failure, allow, deny", clip(ev.Outcome))
	}
	for _, f := range []struct{ name, v string }{
		{"actor", ev.Actor}, {"action", ev.Action}, {"resource", ev.Resource}, {"outcome", ev.Outcome},
		{"source", ev.Source}, {"request_id", ev.RequestID},
	} {
		if err := checkText(f.name, f.v, MaxFieldBytes); err != nil {
			return ev, err
		}
	}
	if len(ev.Details) > MaxDetails {
		return ev, errkind.New(errkind.Invalid, "audit: %d details, more than %d", len(ev.Details), MaxDetails)
	}
	for k, v := range ev.Details {
		if k == "" {
			return ev, errkind.New(errkind.Invalid, "audit: detail with an empty key")
		}
		if err := checkText("detail key", k, MaxDetailKey); err != nil {
			return ev, err
		}
		if err := checkText("detail "+clip(k), v, MaxFieldBytes); err != nil {
			return ev, err
		}
	}
	if !ev.Time.IsZero() {
		if y := ev.Time.UTC().Year(); y < 1 || y > 9999 {
			return ev, errkind.New(errkind.Invalid, "audit: event time year %d out of range", y)
		}
		ev.Time = store.FromMicros(store.Micros(ev.Time))
	}
	if len(ev.Details) == 0 {
		ev.Details = nil
	}
	return ev, nil
}

// checkText refuses strings that are too long, not UTF-8 (JSON export would
// alter them) or hold NUL (PostgreSQL TEXT cannot).
func checkText(name, v string, max int) error {
	switch {
	case len(v) > max:
		return errkind.New(errkind.Invalid, "audit: %s is %d bytes, more than %d", name, len(v), max)
	case !utf8.ValidString(v):
		return errkind.New(errkind.Invalid, "audit: %s is not valid UTF-8", name)
	}
	for i := 0; i < len(v); i++ {
		if v[i] == 0 {
			return errkind.New(errkind.Invalid, "audit: %s contains a NUL byte", name)
		}
	}
	return nil
}

// clip shortens s for use in an error message.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
