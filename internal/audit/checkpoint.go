package audit

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Checkpoint is a signed statement that the chain's event Seq had Hash.
// Signature is the base64 (standard, padded) Ed25519 signature over
// CheckpointMessage(Seq, Hash, Time).
type Checkpoint struct {
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	Signature string    `json:"signature"`
}

// Checkpoint signs the current head of the chain if it has advanced since
// the last checkpoint. It reports false, with no error, when there is
// nothing new, when the Log has no Signer, or when the Signer is sealed.
//
// It never signs over a chain it cannot vouch for, and refuses with an
// errkind.Conflict error (logged at error level) when:
//   - the events written since the last checkpoint do not recompute or do
//     not link to it (the chain was broken in between);
//   - the last stored checkpoint does not carry a valid signature by the
//     Signer's key (it was forged or altered);
//   - the last checkpoint this Log wrote or verified is no longer the
//     last one stored, or no checkpoint is stored at all any more
//     (checkpoints were deleted, perhaps to hide a rewrite of the chain);
//   - a stored checkpoint lies beyond the last event (the tail was deleted).
//
// With no checkpoint stored, the first one is signed only after the whole
// chain recomputes from genesis. What this Log wrote or verified is kept
// in memory only: a Log started on a database whose checkpoints were all
// deleted and whose chain was rewritten consistently cannot tell it from a
// log that was never checkpointed. It then signs, but logs a warning when
// the events it adopts are older than 2×CheckpointInterval; Verify reports
// such a chain until then (see Verify). Two processes checkpointing the
// same head at once write one checkpoint.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, bool, error) {
	if l.signer == nil {
		return Checkpoint{}, false, nil
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()

	last, found, err := l.lastCheckpoint(ctx)
	if err != nil {
		return Checkpoint{}, false, err
	}
	switch {
	case l.signed.Seq > 0 && !found:
		return Checkpoint{}, false, l.refuse("no checkpoint is stored although this server wrote or verified one at seq %d: checkpoints were deleted", l.signed.Seq)
	case last.Seq < l.signed.Seq:
		return Checkpoint{}, false, l.refuse("the last stored checkpoint is at seq %d although this server wrote or verified one at seq %d: checkpoints were deleted", last.Seq, l.signed.Seq)
	case found && last.Seq == l.signed.Seq && last.Hash != l.signed.Hash:
		return Checkpoint{}, false, l.refuse("the checkpoint at seq %d was altered since this server wrote or verified it", last.Seq)
	}
	var head int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&head); err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: read chain head: %w", err)
	}
	if head < last.Seq {
		return Checkpoint{}, false, l.refuse("the checkpoint at seq %d is beyond the last event %d: the tail was deleted", last.Seq, head)
	}
	if head == last.Seq {
		return Checkpoint{}, false, nil
	}
	if found && last.Seq != l.signed.Seq {
		// Written by another process, or before this one started: resume
		// from it only if it is genuine.
		pub, err := l.signer.PublicKey(ctx)
		if errkind.Is(err, errkind.Sealed) {
			return Checkpoint{}, false, l.sealed(head)
		}
		if err != nil {
			return Checkpoint{}, false, fmt.Errorf("audit: checkpoint key: %w", err)
		}
		if !validSignature(pub, last) {
			return Checkpoint{}, false, l.refuse("the last stored checkpoint (seq %d) has no valid signature: it was forged or altered", last.Seq)
		}
		l.signed = last
	}

	v, err := resumeVerifier(last.Seq, last.Hash)
	if err != nil {
		return Checkpoint{}, false, l.refuse("the last checkpoint (seq %d) is malformed: %v", last.Seq, err)
	}
	var bad *Problem
	var oldest time.Time // time of the first event not yet signed
	err = l.scan(ctx, `SELECT `+eventColumns+` FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq`,
		[]any{last.Seq, head}, func(ev Event, derr error) error {
			if ev.Seq == last.Seq+1 {
				oldest = ev.Time
			}
			p, err := v.event(ev, derr)
			if p != nil {
				bad = p
				return errStop
			}
			return err
		})
	if err != nil && !errors.Is(err, errStop) {
		return Checkpoint{}, false, err
	}
	if bad == nil && v.next <= head {
		bad = &Problem{Seq: v.next, Reason: "event is missing"}
	}
	if bad != nil {
		return Checkpoint{}, false, l.refuse("the chain is broken at seq %d (%s); not signing it", bad.Seq, bad.Reason)
	}

	now := l.now()
	if !found && now.Sub(oldest) > 2*l.interval {
		l.logger.Warn("audit: signing the first checkpoint over events no checkpoint covered, some older than 2×checkpoint_interval: "+
			"if this log was checkpointed before, its checkpoints were deleted; compare it with an earlier export",
			"events", head, "oldest", oldest)
	}
	cp := Checkpoint{Seq: head, Hash: v.rep.Head, Time: store.FromMicros(store.Micros(now))}
	msg, err := CheckpointMessage(cp.Seq, cp.Hash, cp.Time)
	if err != nil {
		return Checkpoint{}, false, err
	}
	sig, err := l.signer.Sign(ctx, msg)
	if errkind.Is(err, errkind.Sealed) {
		return Checkpoint{}, false, l.sealed(cp.Seq)
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	cp.Signature = base64.StdEncoding.EncodeToString(sig)
	_, err = l.db.ExecContext(ctx,
		`INSERT INTO audit_checkpoints (seq, hash, time_us, signature) VALUES ($1, $2, $3, $4)`,
		cp.Seq, cp.Hash, store.Micros(cp.Time), cp.Signature)
	if store.IsUniqueViolation(err) {
		return Checkpoint{}, false, nil // another process sealed this head
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: write checkpoint: %w", err)
	}
	l.signed = cp
	l.since.Store(0)
	return cp, true, nil
}

// lastCheckpoint reads the stored checkpoint with the highest seq; found is
// false when there is none.
func (l *Log) lastCheckpoint(ctx context.Context) (cp Checkpoint, found bool, err error) {
	var us int64
	err = l.db.QueryRowContext(ctx, `SELECT seq, hash, time_us, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`).
		Scan(&cp.Seq, &cp.Hash, &us, &cp.Signature)
	if errors.Is(err, sql.ErrNoRows) {
		return Checkpoint{Hash: GenesisHash}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: read last checkpoint: %w", err)
	}
	cp.Time = store.FromMicros(us)
	return cp, true, nil
}

// refuse logs why Checkpoint will not sign and returns it as a Conflict.
func (l *Log) refuse(format string, args ...any) error {
	err := errkind.New(errkind.Conflict, "audit: not signing a checkpoint: "+format+"; run `warder audit verify`", args...)
	l.logger.Error("audit: TAMPERING SUSPECTED: checkpoint refused", "err", err)
	return err
}

// sealed records that a checkpoint of seq was skipped because the signer
// is sealed; it returns nil.
func (l *Log) sealed(seq int64) error {
	l.logger.Debug("audit: signer sealed; checkpoint skipped", "seq", seq)
	l.since.Store(0) // let Run retry after another CheckpointEvery events, not on each batch
	return nil
}

// validSignature reports whether cp carries a valid signature by pub.
func validSignature(pub ed25519.PublicKey, cp Checkpoint) bool {
	msg, err := CheckpointMessage(cp.Seq, cp.Hash, cp.Time)
	if err != nil {
		return false
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(cp.Signature)
	return err == nil && ed25519.Verify(pub, msg, sig)
}

// Checkpoints returns the stored checkpoints with seq > afterSeq in
// ascending order, at most limit (0: all), for export beside the events.
func (l *Log) Checkpoints(ctx context.Context, afterSeq int64, limit int) ([]Checkpoint, error) {
	return l.readCheckpoints(ctx, afterSeq, 0, limit)
}

// readCheckpoints returns the checkpoints with afterSeq < seq <= maxSeq
// (maxSeq 0: no bound) in ascending order, at most limit (0: all).
func (l *Log) readCheckpoints(ctx context.Context, afterSeq, maxSeq int64, limit int) ([]Checkpoint, error) {
	q := `SELECT seq, hash, time_us, signature FROM audit_checkpoints WHERE seq > $1`
	args := []any{afterSeq}
	if maxSeq > 0 {
		q += ` AND seq <= $2`
		args = append(args, maxSeq)
	}
	q += ` ORDER BY seq`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		cp, err := scanCheckpoint(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	return out, nil
}

func scanCheckpoint(rows *sql.Rows) (Checkpoint, error) {
	var cp Checkpoint
	var us int64
	if err := rows.Scan(&cp.Seq, &cp.Hash, &us, &cp.Signature); err != nil {
		return cp, fmt.Errorf("audit: read checkpoint: %w", err)
	}
	cp.Time = store.FromMicros(us)
	return cp, nil
}

// Run writes checkpoints until ctx is done: every CheckpointInterval when
// new events exist, and as soon as CheckpointEvery events were appended
// through this Log. Failures are logged and retried at the next tick.
func (l *Log) Run(ctx context.Context) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
		}
		cp, ok, err := l.Checkpoint(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			l.logger.Error("audit: checkpoint failed", "err", err)
		case ok:
			l.logger.Debug("audit: checkpoint written", "seq", cp.Seq)
		}
	}
}
