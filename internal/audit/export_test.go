package audit

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/testenv"
)

// appendMany appends n sample events from several goroutines, so that they
// are group-committed.
func appendMany(t *testing.T, l *Log, n int) {
	t.Helper()
	const workers = 16
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if _, err := l.Append(context.Background(), sampleEvent(i)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// exportSeqs exports f and returns the seqs of the lines written.
func exportSeqs(t *testing.T, l *Log, f Filter) []int64 {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Export(context.Background(), &buf, f); err != nil {
		t.Fatalf("Export(%+v): %v", f, err)
	}
	var out []int64
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		ev, err := DecodeEvent(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.Seq)
	}
	return out
}

func TestExportPages(t *testing.T) {
	ctx := context.Background()
	l := newLog(t, testenv.SQLite(t), Config{})
	const n = 2*exportPage + 500
	appendMany(t, l, n)
	run := func(from, to, step int64) []int64 {
		var s []int64
		for i := from; i <= to; i += step {
			s = append(s, i)
		}
		return s
	}
	tests := []struct {
		name string
		f    Filter
		want []int64
	}{
		{"all", Filter{}, run(1, n, 1)},
		{"limit over a page", Filter{Limit: exportPage + 1}, run(1, exportPage+1, 1)},
		{"limit of exactly a page", Filter{Limit: exportPage}, run(1, exportPage, 1)},
		{"after and before", Filter{AfterSeq: 10, BeforeSeq: 2*exportPage + 10}, run(11, 2*exportPage+9, 1)},
		{"action", Filter{Action: "auth.token"}, nil}, // filled below
	}
	var want []int64
	for after := int64(0); after < n; after += 1000 {
		evs, err := l.List(ctx, Filter{AfterSeq: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Action == "auth.token" {
				want = append(want, ev.Seq)
			}
		}
	}
	tests[len(tests)-1].want = want
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := exportSeqs(t, l, tt.f)
			if len(got) != len(tt.want) {
				t.Fatalf("exported %d events, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("line %d is event %d, want %d", i, got[i], tt.want[i])
				}
			}
		})
	}
	if err := l.Export(ctx, &bytes.Buffer{}, Filter{Desc: true}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("Export in descending order: %v, want Invalid", err)
	}
}

// blockingWriter blocks every Write until release is closed, and closes
// started on the first.
type blockingWriter struct {
	once    sync.Once
	started chan struct{}
	release chan struct{}
	n       int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	w.n += bytes.Count(p, []byte("\n"))
	return len(p), nil
}

// TestExportSlowReader checks that exports blocked on a slow reader hold
// no database connection, and that a third concurrent export is refused.
func TestExportSlowReader(t *testing.T) {
	ctx := context.Background()
	db := testenv.SQLite(t) // 4 read connections
	l := newLog(t, db, Config{})
	const n = exportPage + 200
	appendMany(t, l, n)

	release := make(chan struct{})
	var writers []*blockingWriter
	errs := make(chan error, maxExports)
	for range maxExports {
		w := &blockingWriter{started: make(chan struct{}), release: release}
		writers = append(writers, w)
		go func() { errs <- l.Export(ctx, w, Filter{}) }()
		<-w.started
	}
	if err := l.Export(ctx, &bytes.Buffer{}, Filter{}); !errors.Is(err, ErrTooManyExports) || !errkind.Is(err, errkind.Unavailable) {
		t.Errorf("third Export: %v, want ErrTooManyExports", err)
	}

	// Every read connection is free: open one cursor on each at once.
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var open []*sql.Rows
	for i := range 4 {
		rows, err := db.QueryContext(qctx, `SELECT seq FROM audit_events`)
		if err != nil {
			t.Fatalf("query %d while exports wait on their readers: %v", i, err)
		}
		open = append(open, rows)
		if !rows.Next() {
			t.Fatalf("query %d: %v", i, rows.Err())
		}
	}
	for _, rows := range open {
		rows.Close()
	}

	close(release)
	for range maxExports {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range writers {
		if w.n != n {
			t.Errorf("export wrote %d lines, want %d", w.n, n)
		}
	}
}

func TestPageNewestFirst(t *testing.T) {
	ctx := context.Background()
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			l := newLog(t, be.Open(t), Config{})
			appendN(t, l, 12)
			tests := []struct {
				name     string
				f        Filter
				want     []int64
				wantMore bool
			}{
				{"newest", Filter{Desc: true, Limit: 3}, []int64{12, 11, 10}, true},
				{"older page", Filter{Desc: true, BeforeSeq: 10, Limit: 3}, []int64{9, 8, 7}, true},
				{"last older page", Filter{Desc: true, BeforeSeq: 3, Limit: 3}, []int64{2, 1}, false},
				{"exactly the rest", Filter{Desc: true, BeforeSeq: 4, Limit: 3}, []int64{3, 2, 1}, false},
				{"filtered", Filter{Desc: true, Action: "sys.unseal", Limit: 2}, []int64{10, 7}, true},
				{"ascending", Filter{AfterSeq: 9, Limit: 3}, []int64{10, 11, 12}, false},
				{"ascending with more", Filter{Limit: 11}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, true},
			}
			for _, tt := range tests {
				evs, more, err := l.Page(ctx, tt.f)
				if err != nil {
					t.Fatal(err)
				}
				if got := seqs(evs); !slices.Equal(got, tt.want) || more != tt.wantMore {
					t.Errorf("%s: %v more=%v, want %v more=%v", tt.name, got, more, tt.want, tt.wantMore)
				}
			}
		})
	}
}
