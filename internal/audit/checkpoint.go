package audit

import (
	"context"
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
// Before signing, it recomputes the events written since the last
// checkpoint and checks they link to it, so it never signs a chain that was
// broken in between; a broken chain is an errkind.Conflict error. Two
// processes checkpointing the same head at once write one checkpoint.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, bool, error) {
	if l.signer == nil {
		return Checkpoint{}, false, nil
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()

	last := Checkpoint{Hash: GenesisHash}
	err := l.db.QueryRowContext(ctx,
		`SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`).Scan(&last.Seq, &last.Hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Checkpoint{}, false, fmt.Errorf("audit: read last checkpoint: %w", err)
	}
	var head int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&head); err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: read chain head: %w", err)
	}
	if head <= last.Seq {
		return Checkpoint{}, false, nil
	}

	v, err := resumeVerifier(last.Seq, last.Hash)
	if err != nil {
		return Checkpoint{}, false, errkind.New(errkind.Conflict, "audit: last checkpoint (seq %d) is malformed; run verify: %w", last.Seq, err)
	}
	var bad *Problem
	err = l.scan(ctx, `SELECT `+eventColumns+` FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq`,
		[]any{last.Seq, head}, func(ev Event, derr error) error {
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
		l.logger.Error("audit: chain is broken; not signing a checkpoint", "seq", bad.Seq, "reason", bad.Reason)
		return Checkpoint{}, false, errkind.New(errkind.Conflict, "audit: chain is broken at seq %d (%s); not signing it", bad.Seq, bad.Reason)
	}

	cp := Checkpoint{Seq: head, Hash: v.rep.Head, Time: store.FromMicros(store.Micros(l.now()))}
	msg, err := CheckpointMessage(cp.Seq, cp.Hash, cp.Time)
	if err != nil {
		return Checkpoint{}, false, err
	}
	sig, err := l.signer.Sign(ctx, msg)
	if errkind.Is(err, errkind.Sealed) {
		l.logger.Debug("audit: signer sealed; checkpoint skipped", "seq", cp.Seq)
		l.since.Store(0) // let Run retry after another CheckpointEvery events, not on each batch
		return Checkpoint{}, false, nil
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
	l.since.Store(0)
	return cp, true, nil
}

// Checkpoints returns the stored checkpoints with seq > afterSeq in
// ascending order, at most limit (0: all), for export beside the events.
func (l *Log) Checkpoints(ctx context.Context, afterSeq int64, limit int) ([]Checkpoint, error) {
	q := `SELECT seq, hash, time_us, signature FROM audit_checkpoints WHERE seq > $1 ORDER BY seq`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := l.db.QueryContext(ctx, q, afterSeq)
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
