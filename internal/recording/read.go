package recording

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Info describes a session.
type Info struct {
	ID        string    `json:"id"`
	Kind      Kind      `json:"kind"`
	Principal string    `json:"principal"`
	Target    string    `json:"target"`
	Account   string    `json:"account,omitempty"`
	Source    string    `json:"source,omitempty"`
	Command   string    `json:"command,omitempty"`
	PTY       bool      `json:"pty"`
	Width     int       `json:"width"`
	Height    int       `json:"height"`
	GrantID   string    `json:"grant_id,omitempty"`
	LeaseID   string    `json:"lease_id,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"` // zero while active
	// BytesIn and BytesOut count what the session carried (AddBytes);
	// for a session active in this process they are live, otherwise
	// stored at Close.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	Events   int64 `json:"events"` // events recorded; stored at Close
	// Status is "active", "closed", "killed", "expired" or "error".
	Status string `json:"status"`
	// SHA256 is the hex SHA-256 of the recording (the asciicast file
	// WriteAsciicast writes), set at Close. Empty while active and for a
	// session recovered after a crash.
	SHA256 string `json:"sha256,omitempty"`
}

// Filter selects sessions for List. Zero fields select everything.
type Filter struct {
	Kind      Kind
	Principal string
	Account   string // "target/user", as the gateways record it
	Active    bool   // only active sessions
	Limit     int    // at most this many, newest first; 0: 100; at most 1000
}

const infoColumns = `id, kind, principal, target, account, source, command, pty, width, height, grant_id, lease_id,
	started_at, ended_at, bytes_in, bytes_out, events, status, sha256`

func scanInfo(sc interface{ Scan(...any) error }) (Info, error) {
	var i Info
	var kind string
	var pty int
	var started, ended int64
	if err := sc.Scan(&i.ID, &kind, &i.Principal, &i.Target, &i.Account, &i.Source, &i.Command, &pty, &i.Width, &i.Height,
		&i.GrantID, &i.LeaseID, &started, &ended, &i.BytesIn, &i.BytesOut, &i.Events, &i.Status, &i.SHA256); err != nil {
		return Info{}, err
	}
	i.Kind, i.PTY, i.StartedAt = Kind(kind), pty != 0, store.FromMicros(started)
	if ended != 0 {
		i.EndedAt = store.FromMicros(ended)
	}
	return i, nil
}

// liveInfo adds the live byte counts of a session served here.
func (r *Recorder) liveInfo(i Info) Info {
	if i.Status != StatusActive {
		return i
	}
	if s := r.session(i.ID); s != nil {
		i.BytesIn, i.BytesOut = s.in.Load(), s.out.Load()
	}
	return i
}

// List returns the sessions f selects, newest first.
func (r *Recorder) List(ctx context.Context, f Filter) ([]Info, error) {
	switch {
	case f.Limit < 0:
		return nil, errkind.New(errkind.Invalid, "recording: negative limit")
	case f.Limit == 0:
		f.Limit = 100
	case f.Limit > 1000:
		f.Limit = 1000
	}
	var where []string
	var args []any
	if f.Kind != "" {
		args = append(args, string(f.Kind))
		where = append(where, fmt.Sprintf("kind = $%d", len(args)))
	}
	if f.Principal != "" {
		args = append(args, f.Principal)
		where = append(where, fmt.Sprintf("principal = $%d", len(args)))
	}
	if f.Account != "" {
		args = append(args, f.Account)
		where = append(where, fmt.Sprintf("account = $%d", len(args)))
	}
	if f.Active {
		where = append(where, "status = 'active'")
	}
	q := `SELECT ` + infoColumns + ` FROM recording_sessions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(` ORDER BY started_at DESC, id LIMIT $%d`, len(args))
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("recording: list sessions: %w", err)
	}
	defer rows.Close()
	out := []Info{}
	for rows.Next() {
		i, err := scanInfo(rows)
		if err != nil {
			return nil, fmt.Errorf("recording: list sessions: %w", err)
		}
		out = append(out, r.liveInfo(i))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recording: list sessions: %w", err)
	}
	return out, nil
}

// Get returns one session; an unknown id is NotFound.
func (r *Recorder) Get(ctx context.Context, id string) (Info, error) {
	i, err := scanInfo(r.db.QueryRowContext(ctx, `SELECT `+infoColumns+` FROM recording_sessions WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Info{}, errkind.New(errkind.NotFound, "recording: no session %s", quoteID(id))
	}
	if err != nil {
		return Info{}, fmt.Errorf("recording: read session %s: %w", quoteID(id), err)
	}
	return r.liveInfo(i), nil
}

// maxChunkPlain bounds a chunk's inflated size (ChunkBytes is at most
// 16 MiB, plus one event line).
const maxChunkPlain = 16<<20 + MaxLineBytes

// chunkPage is how many chunks are read per query: reads never hold a
// database connection while the caller's function runs.
const chunkPage = 16

// chunks calls fn with the plaintext of each chunk of session i in order,
// then checks that they hash to i.SHA256 (when set: the session ended
// normally). A missing, moved, altered or extra chunk is an error wrapping
// ErrTampered.
func (r *Recorder) chunks(ctx context.Context, i Info, fn func(plain []byte) error) error {
	h := sha256.New()
	var next int64
	for {
		type row struct {
			seq int64
			ct  []byte
		}
		var page []row
		rows, err := r.db.QueryContext(ctx, `SELECT seq, data_ct FROM recording_chunks WHERE session_id = $1 AND seq >= $2
			ORDER BY seq LIMIT $3`, i.ID, next, chunkPage)
		if err != nil {
			return fmt.Errorf("recording: read session %s: %w", i.ID, err)
		}
		for rows.Next() {
			var c row
			if err := rows.Scan(&c.seq, &c.ct); err != nil {
				rows.Close()
				return fmt.Errorf("recording: read session %s: %w", i.ID, err)
			}
			page = append(page, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("recording: read session %s: %w", i.ID, err)
		}
		if len(page) == 0 {
			break
		}
		for _, c := range page {
			if c.seq != next {
				return fmt.Errorf("%w (chunk %d of session %s is missing)", ErrTampered, next, i.ID)
			}
			plain, err := r.openChunk(ctx, i.ID, c.seq, c.ct)
			if err != nil {
				return err
			}
			h.Write(plain)
			if err := fn(plain); err != nil {
				return err
			}
			next++
		}
	}
	if i.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != i.SHA256 {
		return fmt.Errorf("%w (session %s)", ErrTampered, i.ID)
	}
	return nil
}

// openChunk decrypts and inflates one chunk.
func (r *Recorder) openChunk(ctx context.Context, id string, seq int64, ct []byte) ([]byte, error) {
	z, err := r.cipher.Decrypt(ctx, chunkAAD(id, seq), ct)
	if errkind.Is(err, errkind.Sealed) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w (chunk %d of session %s does not decrypt: %w)", ErrTampered, seq, id, err)
	}
	fr := flate.NewReader(bytes.NewReader(z))
	defer fr.Close()
	plain, err := io.ReadAll(io.LimitReader(fr, maxChunkPlain+1))
	if err != nil || len(plain) > maxChunkPlain {
		return nil, fmt.Errorf("%w (chunk %d of session %s does not inflate)", ErrTampered, seq, id)
	}
	return plain, nil
}

// verified reads session id and, unless it is active, checks its chunks
// against its hash before anything is handed to the caller.
func (r *Recorder) verified(ctx context.Context, id string) (Info, error) {
	i, err := r.Get(ctx, id)
	if err != nil {
		return Info{}, err
	}
	if i.SHA256 != "" {
		if err := r.chunks(ctx, i, func([]byte) error { return nil }); err != nil {
			return Info{}, err
		}
	}
	return i, nil
}

// Replay calls fn with each event of a session's recording, in order. The
// chunks are checked against the recording's SHA-256 before the first
// event, and again as they are read: an altered recording is an error
// wrapping ErrTampered. The recording of an active session (what is stored
// so far) and of a session recovered after a crash has no hash to check.
// An error from fn stops the replay and is returned.
func (r *Recorder) Replay(ctx context.Context, id string, fn func(Event) error) error {
	i, err := r.verified(ctx, id)
	if err != nil {
		return err
	}
	var d decoder
	var rest []byte
	err = r.chunks(ctx, i, func(plain []byte) error {
		rest = append(rest, plain...)
		for {
			nl := bytes.IndexByte(rest, '\n')
			if nl < 0 {
				if len(rest) > MaxLineBytes {
					return fmt.Errorf("recording: session %s: %w", i.ID, errFormat(d.line+1, "longer than %d bytes", MaxLineBytes))
				}
				return nil
			}
			_, ev, isHeader, err := d.next(rest[:nl])
			rest = rest[nl+1:]
			if err != nil {
				return fmt.Errorf("recording: session %s: %w", i.ID, err)
			}
			if !isHeader {
				if err := fn(ev); err != nil {
					return err
				}
			}
		}
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("recording: session %s ends with a partial line", i.ID)
	}
	return nil
}

// WriteAsciicast writes a session's recording to w as an asciicast v2
// file: a header line {"version":2,"width":..,"height":..,"timestamp":..,
// "title":..} and one line per event, exactly as recorded, so that its
// SHA-256 is the one in the audit log's "session.end" event. It checks the
// recording as Replay does, before writing; an error after writing began
// means w holds a damaged file.
func (r *Recorder) WriteAsciicast(ctx context.Context, id string, w io.Writer) error {
	i, err := r.verified(ctx, id)
	if err != nil {
		return err
	}
	return r.chunks(ctx, i, func(plain []byte) error {
		if _, err := w.Write(plain); err != nil {
			return fmt.Errorf("recording: write asciicast: %w", err)
		}
		return nil
	})
}
