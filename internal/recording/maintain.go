package recording

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/store"
)

// pruneBatch is how many sessions Prune deletes per transaction.
const pruneBatch = 200

// Prune deletes the recordings of sessions that ended more than Retention
// ago, with their rows, and returns how many it deleted. Each batch is
// deleted with an audit event "recording.prune" (details count and
// ended_before) in one transaction. Active sessions are never deleted. The
// audit events of a pruned session ("session.start", "session.end" with
// the recording's SHA-256) stay in the audit log. With Retention
// KeepForever it deletes nothing. On PostgreSQL it first recovers sessions
// orphaned by a dead process (see the package documentation).
func (r *Recorder) Prune(ctx context.Context) (int, error) {
	if r.db.Kind() == store.Postgres {
		if _, err := r.recoverOrphans(ctx, false); err != nil {
			return 0, err
		}
	}
	if r.retention == KeepForever {
		return 0, nil
	}
	now := r.now()
	cutoff := store.Micros(now.Add(-r.retention))
	total := 0
	for {
		rows, err := r.db.QueryContext(ctx, `SELECT id FROM recording_sessions WHERE status <> 'active' AND ended_at < $1
			ORDER BY ended_at LIMIT $2`, cutoff, pruneBatch)
		if err != nil {
			return total, fmt.Errorf("recording: prune: %w", err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return total, fmt.Errorf("recording: prune: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("recording: prune: %w", err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		n := 0
		err = r.db.InTx(ctx, func(tx *sql.Tx) error {
			n = 0
			for _, id := range ids {
				if _, err := tx.ExecContext(ctx, `DELETE FROM recording_chunks WHERE session_id = $1`, id); err != nil {
					return err
				}
				res, err := tx.ExecContext(ctx, `DELETE FROM recording_sessions WHERE id = $1 AND status <> 'active'`, id)
				if err != nil {
					return err
				}
				k, _ := res.RowsAffected()
				n += int(k)
			}
			if n == 0 {
				return nil
			}
			_, err := r.audit.AppendTx(ctx, tx, system.Event("recording.prune", "recording", audit.OutcomeSuccess,
				map[string]string{"count": strconv.Itoa(n), "ended_before": now.Add(-r.retention).UTC().Format("2006-01-02T15:04:05Z")}))
			return err
		})
		if err != nil {
			return total, fmt.Errorf("recording: prune: %w", err)
		}
		total += n
		if len(ids) < pruneBatch {
			return total, nil
		}
	}
}

// RunPrune runs Prune at once and then every interval (zero: one hour)
// until ctx ends, logging how many recordings each run deleted; a failed
// run is logged and retried at the next. Several server processes on one
// database may each run it: a recording is deleted, and counted in an
// audit event, once.
func (r *Recorder) RunPrune(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := r.Prune(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.log.Warn("recording: pruning old recordings failed; retrying later", "err", err, "retry_in", interval)
		case n > 0:
			r.log.Info("recording: pruned recordings past their retention", "count", n, "retention", r.retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Rewrap implements barrier.Rewrapper: it re-encrypts every chunk under an
// older data key with b's current one and reports how many it changed. A
// chunk changed meanwhile is left for the next round; one that does not
// decrypt is skipped and reported in the error.
func (r *Recorder) Rewrap(ctx context.Context, b *barrier.Barrier) (int, error) {
	type row struct {
		id  string
		seq int64
		ct  []byte
	}
	var (
		lastID  string
		lastSeq int64 = -1
		n       int
		errs    []error
	)
	for {
		rows, err := r.db.QueryContext(ctx, `SELECT session_id, seq, data_ct FROM recording_chunks
			WHERE session_id > $1 OR (session_id = $1 AND seq > $2) ORDER BY session_id, seq LIMIT 256`, lastID, lastSeq)
		if err != nil {
			return n, fmt.Errorf("recording: rewrap: %w", err)
		}
		var page []row
		for rows.Next() {
			var c row
			if err := rows.Scan(&c.id, &c.seq, &c.ct); err != nil {
				rows.Close()
				return n, fmt.Errorf("recording: rewrap: %w", err)
			}
			page = append(page, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return n, fmt.Errorf("recording: rewrap: %w", err)
		}
		if len(page) == 0 {
			return n, errors.Join(errs...)
		}
		for _, c := range page {
			lastID, lastSeq = c.id, c.seq
			ct, changed, err := b.Rewrap(ctx, chunkAAD(c.id, c.seq), c.ct)
			if errors.Is(err, barrier.ErrSealed) {
				return n, err
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("recording: rewrap chunk %d of %s: %w", c.seq, c.id, err))
				continue
			}
			if !changed {
				continue
			}
			res, err := r.db.ExecContext(ctx, `UPDATE recording_chunks SET data_ct = $1 WHERE session_id = $2 AND seq = $3 AND data_ct = $4`,
				ct, c.id, c.seq, c.ct)
			if err != nil {
				return n, fmt.Errorf("recording: rewrap chunk %d of %s: %w", c.seq, c.id, err)
			}
			if k, _ := res.RowsAffected(); k == 1 {
				n++
			}
		}
	}
}
