// Package recording records the sessions the SSH and PostgreSQL gateways
// carry: terminal output and input, window resizes, SQL statements and file
// operations, as an asciicast v2 stream stored compressed and encrypted by
// the barrier, and it lets an operator list, replay, watch and end them.
//
// # Format and integrity
//
// A recording is one asciicast v2 file: a header line written at Start
// followed by one event line [time, type, data] per Record. The file is
// cut at event boundaries into chunks of about Config.ChunkBytes, each
// stored deflated and encrypted by the barrier with the AAD
// {"recording.chunk", session id, seq}, so a chunk moved to another
// session or position fails to decrypt. Close stores the SHA-256 of the
// whole file and writes it into the audit log (event "session.end"): a
// file written by WriteAsciicast hashes (sha256sum) to that value, and
// Replay and WriteAsciicast fail when the chunks no longer do. The audit
// log, hash-chained and signed, is the authoritative copy of the hash.
//
// Terminal data is stored as JSON strings: bytes that are not UTF-8 are
// replaced by U+FFFD (a character split across two Records is kept whole).
//
// Everything typed in an interactive session is recorded, including what
// programs read with echo off (passwords at a sudo prompt): recordings are
// as sensitive as the credentials the gateways inject.
//
// # Failing closed
//
// Start writes the session row and its "session.start" audit event in one
// transaction; if it fails, the gateway refuses the connection. Record
// buffers and hands full chunks to a background writer, so the data path
// waits for the database only when several chunks are already queued.
// RecordNoWait never waits: it reports that backlog instead, and
// NotifyDrained says when it is gone, so that an event loop can stop
// reading one session's client without holding up the others. When a
// chunk cannot be stored (database down, barrier sealed) the recording
// has failed: Record and RecordNoWait return an error from then on, the
// session's context is cancelled with an error wrapping
// ErrRecordingFailed, and the gateway ends the session.
//
// # Live control
//
// Kill ends a session: it marks the row and, when the session is served
// by this process, cancels its context at once with a KilledError cause.
// KillPrincipal does the same for every active session of one principal
// (the server calls it when a user is disabled or deleted).
// On PostgreSQL, several server processes may share the database; each
// Recorder that serves sessions polls their rows once a second (one query
// for all of them, which also refreshes their heartbeat), so a kill from
// another process takes effect within about a second. Join, which streams
// live events to an observer, works only in the process serving the
// session (Info does not say which; the API routes to any process, so with
// several processes an observer may need to retry on the right one).
//
// # Retention
//
// Prune deletes the recordings that ended more than Config.Retention ago
// (default 90 days; KeepForever keeps them); RunPrune runs it
// periodically. The audit events of a pruned session stay, including the
// "session.end" event with the recording's SHA-256: an export taken before
// the pruning can still be checked against it.
//
// # Crash recovery
//
// A session whose process died is left active. New marks such sessions
// "error", with the time of their last stored chunk as end time, and
// audits a "session.end" for each with outcome failure and no hash: on
// SQLite, which one process opens at a time, every active session; on
// PostgreSQL, active sessions whose heartbeat is older than 30 seconds
// (Prune recovers those too). Their chunks still replay, unverified.
//
// # Key rotation
//
// *Recorder implements barrier.Rewrapper for the chunk table: the server
// registers it with barrier.Register("recording", r).
package recording

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

//go:embed migrations
var migrations embed.FS

// Kind is the kind of gateway a session went through.
type Kind string

// The session kinds.
const (
	SSH Kind = "ssh"
	DB  Kind = "db"
)

// Status values of a session.
const (
	StatusActive  = "active"
	StatusClosed  = "closed"
	StatusKilled  = "killed"
	StatusExpired = "expired"
	StatusError   = "error"
)

// Bounds on what a session row holds.
const (
	maxField       = 1024 // principal, target, account, source, ids
	maxCommand     = 4096 // Meta.Command
	maxKillMessage = 512
	maxTerminal    = 10000 // width and height
)

var (
	// ErrExpired is the cause of a session's context cancelled by its
	// deadline (SetDeadline).
	ErrExpired = errors.New("recording: the session's grant or lease expired")
	// ErrRecordingFailed is wrapped by the cause of a session's context,
	// and by Record's and RecordNoWait's error, once a chunk could not be
	// stored.
	ErrRecordingFailed = errkind.New(errkind.Unavailable, "recording: the recording failed")
	// ErrClosed is returned by Record and RecordNoWait after Close.
	ErrClosed = errkind.New(errkind.Conflict, "recording: the session is closed")
	// ErrTampered is wrapped by Replay's and WriteAsciicast's error when the
	// stored chunks do not match the recording's hash.
	ErrTampered = errors.New("recording: the recording does not match its SHA-256: it was altered")
)

// KilledError is the cause of a session's context cancelled by Kill.
type KilledError struct {
	Message string // shown to the user; may be empty
}

func (e KilledError) Error() string {
	if e.Message == "" {
		return "recording: the session was terminated by an administrator"
	}
	return "recording: the session was terminated by an administrator: " + e.Message
}

// Cipher encrypts and decrypts records; *barrier.Barrier implements it.
// Both fail while the barrier is sealed.
type Cipher interface {
	Encrypt(ctx context.Context, aad barrier.AAD, plaintext []byte) ([]byte, error)
	Decrypt(ctx context.Context, aad barrier.AAD, ciphertext []byte) ([]byte, error)
}

// Config configures a Recorder. New does not modify it.
type Config struct {
	// DB holds the recording tables. Required.
	DB *store.DB
	// Audit receives session.start, session.end, session.kill and
	// recording.prune events. Required.
	Audit *audit.Log
	// Barrier encrypts the chunks. Required.
	Barrier Cipher
	// Logger receives operational logs, never recorded data. Nil: discard.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// ChunkBytes is how much asciicast text is buffered before it is
	// stored as one chunk. Zero: 64 KiB.
	ChunkBytes int
	// Retention is how long Prune keeps an ended recording. Zero: 90 days.
	// KeepForever: Prune deletes nothing. Other negative values are
	// refused.
	Retention time.Duration
}

// KeepForever is the Config.Retention that keeps recordings forever.
const KeepForever time.Duration = -1

// Recorder stores and serves session recordings. It is safe for
// concurrent use. It needs no Close: it runs a goroutine only while
// sessions it started are open.
type Recorder struct {
	db        *store.DB
	audit     *audit.Log
	cipher    Cipher
	log       *slog.Logger
	now       func() time.Time
	chunk     int
	retention time.Duration
	owner     string        // this Recorder's id in recording_sessions.owner
	poll      time.Duration // how often live sessions' rows are polled (PostgreSQL)
	stale     time.Duration // a heartbeat older than this marks an orphan
	flate     sync.Pool     // *flate.Writer

	// mu protects the following.
	mu       sync.Mutex
	live     map[string]*Session // sessions open in this Recorder
	pollStop chan struct{}       // closed to stop the poller; nil when none runs
	pollDone chan struct{}       // closed by the poller when it ends
}

// New checks cfg, migrates the recording tables, recovers sessions left
// active by a dead process (see the package documentation) and returns a
// Recorder.
func New(ctx context.Context, cfg Config) (*Recorder, error) {
	switch {
	case cfg.DB == nil:
		return nil, errkind.New(errkind.Invalid, "recording: no database configured")
	case cfg.Audit == nil:
		return nil, errkind.New(errkind.Invalid, "recording: no audit log configured")
	case cfg.Barrier == nil:
		return nil, errkind.New(errkind.Invalid, "recording: no barrier configured")
	case cfg.ChunkBytes < 0 || cfg.ChunkBytes > 16<<20:
		return nil, errkind.New(errkind.Invalid, "recording: chunk size %d is not between 0 and 16 MiB", cfg.ChunkBytes)
	case cfg.Retention < 0 && cfg.Retention != KeepForever:
		return nil, errkind.New(errkind.Invalid, "recording: negative retention (use KeepForever to keep recordings forever)")
	}
	r := &Recorder{
		db: cfg.DB, audit: cfg.Audit, cipher: cfg.Barrier, log: cfg.Logger, now: cfg.Now,
		chunk: cfg.ChunkBytes, retention: cfg.Retention,
		owner: randomID(), poll: time.Second, stale: 30 * time.Second,
		live: map[string]*Session{},
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.chunk == 0 {
		r.chunk = 64 << 10
	}
	if r.retention == 0 {
		r.retention = 90 * 24 * time.Hour
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("recording: migrations: %w", err)
	}
	if err := r.db.Migrate(ctx, "recording", sub); err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	if _, err := r.recoverOrphans(ctx, r.db.Kind() == store.SQLite); err != nil {
		return nil, err
	}
	return r, nil
}

// randomID returns 18 random hex characters.
func randomID() string {
	b := make([]byte, 9)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// chunkAAD binds a chunk's ciphertext to its session and position.
func chunkAAD(id string, seq int64) barrier.AAD {
	return barrier.AAD{Kind: "recording.chunk", ID: id, Version: seq}
}

// clip shortens s to at most n bytes without splitting a character.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// quoteID bounds an id for an error message.
func quoteID(id string) string {
	if len(id) > 64 {
		return fmt.Sprintf("%q...", id[:64])
	}
	return fmt.Sprintf("%q", id)
}
