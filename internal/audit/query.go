package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Filter selects events for List and Export. Zero fields select everything.
type Filter struct {
	Actor  string    // exact match
	Action string    // exact match
	Since  time.Time // events at or after Since
	Until  time.Time // events before Until
	// AfterSeq selects events with a greater seq: pass the last seq of an
	// ascending page to get the next.
	AfterSeq int64
	// BeforeSeq selects events with a smaller seq: pass the last seq of a
	// descending page to get the next (older) one.
	BeforeSeq int64
	// Desc makes List return the newest events first (descending seq), so
	// that a page holds the most recent matches. Export refuses it.
	Desc bool
	// Limit is the most events List returns: 0 means 100, more than 1000
	// means 1000. Export returns every match when 0.
	Limit int
}

// List returns the events matching f in ascending seq order, or
// descending if f.Desc.
func (l *Log) List(ctx context.Context, f Filter) ([]Event, error) {
	evs, _, err := l.Page(ctx, f)
	return evs, err
}

// Page is List that also reports whether more events match f beyond the
// ones returned (in f's order).
func (l *Log) Page(ctx context.Context, f Filter) (evs []Event, more bool, err error) {
	switch {
	case f.Limit < 0:
		return nil, false, errkind.New(errkind.Invalid, "audit: negative limit")
	case f.Limit == 0:
		f.Limit = 100
	case f.Limit > 1000:
		f.Limit = 1000
	}
	limit := f.Limit
	f.Limit++
	err = l.query(ctx, f, func(ev Event) error {
		evs = append(evs, ev)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if len(evs) > limit {
		return evs[:limit], true, nil
	}
	return evs, false, nil
}

// ErrTooManyExports is returned by Export when maxExports are running.
var ErrTooManyExports = errkind.New(errkind.Unavailable, "audit: too many exports running; try again later")

// exportPage is how many events Export reads per query. Each page is read
// whole and its connection released before the page is written, so a slow
// reader of the export never holds a database connection.
const exportPage = 1000

// Export writes the events matching f to w as JSON Lines, one Event per
// line in ascending seq order, streaming (memory is bounded by a page of
// events, not the log). A zero Filter exports the whole log as it was when
// Export began. Each line is accepted by DecodeEvent. At most two Exports
// run at once per Log; more get ErrTooManyExports.
func (l *Log) Export(ctx context.Context, w io.Writer, f Filter) error {
	if f.Limit < 0 {
		return errkind.New(errkind.Invalid, "audit: negative limit")
	}
	if f.Desc {
		return errkind.New(errkind.Invalid, "audit: export is always in ascending order")
	}
	select {
	case l.exports <- struct{}{}:
		defer func() { <-l.exports }()
	default:
		return ErrTooManyExports
	}
	var head int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&head); err != nil {
		return fmt.Errorf("audit: export: read chain head: %w", err)
	}
	if f.BeforeSeq == 0 || f.BeforeSeq > head+1 {
		f.BeforeSeq = head + 1
	}
	left := f.Limit // events still wanted, if f.Limit > 0
	bw := bufio.NewWriterSize(w, 64<<10)
	page := make([]Event, 0, exportPage)
	for {
		pf := f
		pf.Limit = exportPage
		if f.Limit > 0 {
			pf.Limit = min(exportPage, left)
		}
		page = page[:0]
		if err := l.query(ctx, pf, func(ev Event) error {
			page = append(page, ev)
			return nil
		}); err != nil {
			return err
		}
		for _, ev := range page {
			b, err := json.Marshal(ev)
			if err != nil {
				return fmt.Errorf("audit: export event %d: %w", ev.Seq, err)
			}
			b = append(b, '\n')
			if _, err := bw.Write(b); err != nil {
				return fmt.Errorf("audit: export: %w", err)
			}
		}
		left -= len(page)
		if len(page) < pf.Limit || (f.Limit > 0 && left == 0) {
			break
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

const eventColumns = `seq, time_us, actor, action, resource, outcome, source, request_id, details, prev_hash, hash`

// query streams the events matching f (Limit 0: all) to fn, holding one
// read connection until it returns.
func (l *Log) query(ctx context.Context, f Filter, fn func(Event) error) error {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Actor != "" {
		add("actor = $%d", f.Actor)
	}
	if f.Action != "" {
		add("action = $%d", f.Action)
	}
	if !f.Since.IsZero() {
		add("time_us >= $%d", store.Micros(f.Since))
	}
	if !f.Until.IsZero() {
		add("time_us < $%d", store.Micros(f.Until))
	}
	if f.AfterSeq > 0 {
		add("seq > $%d", f.AfterSeq)
	}
	if f.BeforeSeq > 0 {
		add("seq < $%d", f.BeforeSeq)
	}
	q := `SELECT ` + eventColumns + ` FROM audit_events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq`
	if f.Desc {
		q += ` DESC`
	}
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	return l.scan(ctx, q, args, func(ev Event, err error) error {
		if err != nil {
			return err
		}
		return fn(ev)
	})
}

// scan runs q and passes each row to fn as an Event. A row whose details
// column is not a JSON object of strings is passed with a non-nil error
// (fn decides: List fails, Verify reports the row as tampered with).
func (l *Log) scan(ctx context.Context, q string, args []any, fn func(Event, error) error) error {
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("audit: query events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ev Event
		var us int64
		var details string
		if err := rows.Scan(&ev.Seq, &us, &ev.Actor, &ev.Action, &ev.Resource, &ev.Outcome,
			&ev.Source, &ev.RequestID, &details, &ev.PrevHash, &ev.Hash); err != nil {
			return fmt.Errorf("audit: read event: %w", err)
		}
		ev.Time = store.FromMicros(us)
		var derr error
		if details != "{}" {
			if err := json.Unmarshal([]byte(details), &ev.Details); err != nil {
				derr = fmt.Errorf("audit: event %d: details column is not a JSON object of strings", ev.Seq)
			}
			if len(ev.Details) == 0 {
				ev.Details = nil
			}
		}
		if err := fn(ev, derr); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: read events: %w", err)
	}
	return nil
}
