package recording

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// busyTerminal generates the output of a busy interactive session: a
// top-like screen redrawn every second and `ls -la`-like listings, about
// rate bytes per second, cut into 100 ms reads.
type busyTerminal struct {
	rng  *rand.Rand
	tick int
	rate int
	buf  strings.Builder
}

func newBusyTerminal(rate int) *busyTerminal {
	return &busyTerminal{rng: rand.New(rand.NewPCG(1, 2)), rate: rate}
}

var procNames = []string{"postgres", "nginx", "sshd", "systemd", "java", "python3", "node", "kworker/0:1", "containerd", "dockerd", "redis-server", "cron"}

func (b *busyTerminal) top() {
	r := b.rng
	fmt.Fprintf(&b.buf, "\x1b[H\x1b[2Jtop - 10:%02d:%02d up 12 days,  3:04,  2 users,  load average: %.2f, %.2f, %.2f\r\n",
		b.tick/600%60, b.tick/10%60, r.Float64()*4, r.Float64()*4, r.Float64()*4)
	fmt.Fprintf(&b.buf, "Tasks: %d total,   %d running, %d sleeping,   0 stopped,   0 zombie\r\n", 200+r.IntN(20), 1+r.IntN(4), 190+r.IntN(10))
	fmt.Fprintf(&b.buf, "%%Cpu(s): %4.1f us,  %3.1f sy,  0.0 ni, %4.1f id,  0.1 wa,  0.0 hi,  0.2 si,  0.0 st\r\n", r.Float64()*30, r.Float64()*5, 60+r.Float64()*30)
	b.buf.WriteString("\r\n\x1b[7m    PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND          \x1b[m\r\n")
	for i := range 30 {
		fmt.Fprintf(&b.buf, "%7d %-8s  20   0 %7d %6d %6d %c %5.1f %5.1f %3d:%05.2f %s\r\n",
			1000+i*37+r.IntN(5), []string{"root", "postgres", "www-data", "alice"}[r.IntN(4)], r.IntN(4000000), r.IntN(900000),
			r.IntN(50000), "SRS"[r.IntN(3)], r.Float64()*20, r.Float64()*5, r.IntN(300), r.Float64()*60, procNames[r.IntN(len(procNames))])
	}
}

func (b *busyTerminal) ls() {
	r := b.rng
	fmt.Fprintf(&b.buf, "alice@web1:/var/log$ ls -la\r\ntotal %d\r\n", r.IntN(90000))
	for range 25 {
		fmt.Fprintf(&b.buf, "-rw-r----- 1 %-8s adm %9d Mar %2d %02d:%02d %s.%d.log\r\n", []string{"root", "syslog", "www-data"}[r.IntN(3)],
			r.IntN(10000000), 1+r.IntN(28), r.IntN(24), r.IntN(60), procNames[r.IntN(len(procNames))], r.IntN(10))
	}
}

// next returns the next 100 ms of output.
func (b *busyTerminal) next() []byte {
	for b.buf.Len() < b.rate/10 {
		if b.tick%10 == 0 {
			b.top()
		} else {
			b.ls()
		}
		b.tick++
	}
	s := b.buf.String()
	out := []byte(s[:b.rate/10])
	b.buf.Reset()
	b.buf.WriteString(s[b.rate/10:])
	return out
}

// recordMinute records one minute of a busy session at rate bytes/s and
// returns the asciicast bytes recorded and the bytes stored.
func recordMinute(tb testing.TB, e *env, clock *fakeClock, rate int) (plain, stored int64) {
	s, err := e.rec.Start(e.ctx, alice, sshMeta)
	if err != nil {
		tb.Fatal(err)
	}
	term := newBusyTerminal(rate)
	for i := range 600 {
		clock.Advance(100 * time.Millisecond)
		if i%5 == 0 {
			s.Record(Input, []byte{"lsq\r"[i/5%4]})
		}
		if err := s.Record(Output, term.next()); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.Close(context.Background(), StatusClosed); err != nil {
		tb.Fatal(err)
	}
	if err := e.db.QueryRowContext(e.ctx, `SELECT s.recorded_bytes, (SELECT SUM(LENGTH(c.data_ct)) FROM recording_chunks c
		WHERE c.session_id = s.id) FROM recording_sessions s WHERE s.id = $1`, s.ID()).Scan(&plain, &stored); err != nil {
		tb.Fatal(err)
	}
	return plain, stored
}

// TestCompressionRatio reports the storage of a minute of a busy session
// at 20 KiB/s (BenchmarkRecord measures the time).
func TestCompressionRatio(t *testing.T) {
	clock := newClock()
	e := newEnv(t, openSQLite(t), envOpts{now: clock.Now})
	plain, stored := recordMinute(t, e, clock, 20<<10)
	t.Logf("one minute at 20 KiB/s: %d bytes of output, %d of asciicast, %d stored (%.1f KiB/min, %.1fx smaller)",
		600*(20<<10)/10, plain, stored, float64(stored)/1024, float64(plain)/float64(stored))
	if stored*3 > plain {
		t.Errorf("compression ratio %.1f, want at least 3", float64(plain)/float64(stored))
	}
}

// BenchmarkRecord records one minute of a busy interactive session (20 KiB/s
// of top- and ls-like output plus keystrokes) per iteration, on SQLite.
func BenchmarkRecord(b *testing.B) {
	clock := newClock()
	e := newEnv(b, openSQLite(b), envOpts{now: clock.Now})
	var plain, stored int64
	b.ReportAllocs()
	for b.Loop() {
		plain, stored = recordMinute(b, e, clock, 20<<10)
	}
	b.ReportMetric(float64(stored), "stored-B/min")
	b.ReportMetric(float64(plain)/float64(stored), "ratio")
}
