package audit

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// batchTimeout bounds one group-commit transaction, so that a hung database
// fails the waiting Appends instead of blocking them forever.
const batchTimeout = 30 * time.Second

// appendReq is one pending Append. The writer sends exactly one result on res.
type appendReq struct {
	ctx context.Context
	ev  Event
	res chan appendRes // buffered (1)
}

type appendRes struct {
	ev  Event
	err error
}

// Append adds ev to the chain and returns it as stored, with Seq, PrevHash,
// Hash and (if ev.Time is zero) Time assigned; Seq, PrevHash and Hash given
// by the caller are ignored. It returns only once the event is committed.
//
// An error means the event may not have been written, and the caller must
// refuse the operation it audits: a malformed event is errkind.Invalid; after
// Close, ErrClosed; a database failure keeps the store's kind (usually
// errkind.Unavailable). If ctx ends while the write is in flight, Append
// returns ctx's error and the event may or may not be committed.
//
// Append must not be called while the caller holds a transaction on the same
// SQLite store (it would wait for the write lock forever); use AppendTx.
func (l *Log) Append(ctx context.Context, ev Event) (Event, error) {
	ev, err := validate(ev)
	if err != nil {
		return Event{}, err
	}
	if err := ctx.Err(); err != nil {
		return Event{}, fmt.Errorf("audit: append: %w", errkind.Wrap(errkind.Unavailable, err))
	}
	req := &appendReq{ctx: ctx, ev: ev, res: make(chan appendRes, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return Event{}, ErrClosed
	}
	select {
	case l.reqs <- req:
	case <-ctx.Done():
		l.mu.RUnlock()
		return Event{}, fmt.Errorf("audit: append: %w", errkind.Wrap(errkind.Unavailable, ctx.Err()))
	}
	l.mu.RUnlock()
	select {
	case r := <-req.res:
		return r.ev, r.err
	case <-ctx.Done():
		return Event{}, fmt.Errorf("audit: append: outcome unknown: %w", errkind.Wrap(errkind.Unavailable, ctx.Err()))
	}
}

// AppendTx adds ev to the chain inside the caller's transaction tx, so that
// a state change and its event commit together or not at all. It takes the
// chain lock, which is held until tx ends: keep tx short. The returned event
// is part of the chain only if tx commits; if tx rolls back, no seq is used.
// tx must belong to the Log's DB.
func (l *Log) AppendTx(ctx context.Context, tx *sql.Tx, ev Event) (Event, error) {
	ev, err := validate(ev)
	if err != nil {
		return Event{}, err
	}
	evs, err := l.appendLocked(ctx, tx, []Event{ev})
	if err != nil {
		return Event{}, err
	}
	l.noteAppended(1)
	return evs[0], nil
}

// appendLocked takes the chain lock in tx, reads the head, chains evs after
// it and inserts them. evs must be validated. It returns the stored events.
func (l *Log) appendLocked(ctx context.Context, tx *sql.Tx, evs []Event) ([]Event, error) {
	if err := l.db.Lock(ctx, tx, "audit"); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	seq, prev, err := readHead(ctx, tx)
	if err != nil {
		return nil, err
	}
	prevRaw, err := hex.DecodeString(prev)
	if err != nil || len(prevRaw) != 32 {
		return nil, fmt.Errorf("audit: head event %d has a malformed hash; run verify", seq)
	}
	out := make([]Event, len(evs))
	for i, ev := range evs {
		seq++
		ev.Seq = seq
		if ev.Time.IsZero() {
			ev.Time = store.FromMicros(store.Micros(l.now()))
		}
		ev.PrevHash = hex.EncodeToString(prevRaw)
		ev.Hash = chainHash(prevRaw, ev)
		prevRaw, _ = hex.DecodeString(ev.Hash)
		out[i] = ev
	}
	if err := insertEvents(ctx, l.db.Kind(), tx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// readHead returns the seq and hash of the last event, or 0 and GenesisHash.
func readHead(ctx context.Context, tx *sql.Tx) (int64, string, error) {
	var seq int64
	var hash string
	err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, GenesisHash, nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("audit: read chain head: %w", err)
	}
	return seq, hash, nil
}

// insertRows is how many events one INSERT statement carries (11 parameters
// each, well under both backends' limits). SQLite has no round trip to save
// and its driver resolves parameter names in linear time, so it gets fewer.
func insertRows(kind store.Kind) int {
	if kind == store.SQLite {
		return 32
	}
	return 256
}

// insertEvents writes chained events with multi-row INSERTs. On SQLite the
// parameters are written ?NNN: SQLite looks $NNN up by name, which costs
// quadratic time in a statement with thousands of them.
func insertEvents(ctx context.Context, kind store.Kind, tx *sql.Tx, evs []Event) error {
	mark := byte('$')
	if kind == store.SQLite {
		mark = '?'
	}
	for len(evs) > 0 {
		n := min(len(evs), insertRows(kind))
		var q strings.Builder
		q.WriteString(`INSERT INTO audit_events (seq, time_us, actor, action, resource, outcome, source, request_id, details, prev_hash, hash) VALUES `)
		args := make([]any, 0, n*11)
		for i, ev := range evs[:n] {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteByte('(')
			for j := range 11 {
				if j > 0 {
					q.WriteByte(',')
				}
				q.WriteByte(mark)
				q.WriteString(strconv.Itoa(len(args) + j + 1))
			}
			q.WriteByte(')')
			details, err := encodeDetails(ev.Details)
			if err != nil {
				return err
			}
			args = append(args, ev.Seq, store.Micros(ev.Time), ev.Actor, ev.Action, ev.Resource, ev.Outcome,
				ev.Source, ev.RequestID, details, ev.PrevHash, ev.Hash)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			if store.IsUniqueViolation(err) {
				return errkind.New(errkind.Conflict, "audit: seq %d already taken: another writer does not hold the audit lock: %w", evs[0].Seq, err)
			}
			return fmt.Errorf("audit: insert events: %w", err)
		}
		evs = evs[n:]
	}
	return nil
}

// encodeDetails is the details column: a JSON object with sorted keys.
func encodeDetails(d map[string]string) (string, error) {
	if len(d) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("audit: encode details: %w", err)
	}
	return string(b), nil
}

// writer is the group-commit goroutine. It ends when Close closes reqs and
// every request queued before has been answered.
func (l *Log) writer() {
	defer close(l.done)
	for req := range l.reqs {
		batch := []*appendReq{req}
	collect:
		for len(batch) < l.maxBatch {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			default:
				break collect
			}
		}
		l.writeBatch(batch)
	}
}

// writeBatch writes the live requests of batch in one transaction and
// answers each of them.
func (l *Log) writeBatch(batch []*appendReq) {
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.res <- appendRes{err: fmt.Errorf("audit: append: %w", errkind.Wrap(errkind.Unavailable, err))}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	evs := make([]Event, len(live))
	for i, r := range live {
		evs[i] = r.ev
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	var out []Event
	err := l.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = l.appendLocked(ctx, tx, evs)
		return err
	})
	if err != nil {
		l.logger.Error("audit: group commit failed", "events", len(live), "err", err)
		err = fmt.Errorf("audit: append: %w", err)
		for _, r := range live {
			r.res <- appendRes{err: err}
		}
		return
	}
	for i, r := range live {
		r.res <- appendRes{ev: out[i]}
	}
	l.noteAppended(len(live))
}

// noteAppended counts events towards CheckpointEvery and wakes Run when due.
func (l *Log) noteAppended(n int) {
	if l.since.Add(int64(n)) >= int64(l.every) {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}
