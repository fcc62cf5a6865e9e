package ssh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os/exec"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/recording"
	"github.com/warderhq/warder/internal/testenv"
)

// realRecorder is the recording package's Recorder on a SQLite store with
// an unsealed barrier and a real audit log.
func realRecorder(t *testing.T) (*recording.Recorder, *audit.Log) {
	t.Helper()
	ctx := context.Background()
	db := testenv.SQLite(t)
	b, err := barrier.New(ctx, barrier.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Init(ctx, barrier.InitOptions{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.UnsealWithKeyFile(ctx, res.UnsealKey); err != nil {
		t.Fatal(err)
	}
	log, err := audit.New(ctx, audit.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	r, err := recording.New(ctx, recording.Config{DB: db, Audit: log, Barrier: b})
	if err != nil {
		t.Fatal(err)
	}
	return r, log
}

// countingWriter counts what it is given and discards it.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// randomReader is an endless random upload that counts what was read.
type randomReader struct{ n atomic.Int64 }

func (r *randomReader) Read(p []byte) (int, error) {
	rand.Read(p)
	r.n.Add(int64(len(p)))
	return len(p), nil
}

// A client killed in the middle of a large upload or output stream leaves
// a closed, complete recording — end time, status, SHA-256 in the audit
// log matching the stored file — and the gateway goes on serving another
// session meanwhile.
func TestClientVanishes(t *testing.T) {
	rec, log := realRecorder(t)
	e := newEnv(t, func(c *Config) {
		c.Recorder = Recordings(rec)
		c.Audit = log
	})
	args, port := e.opensshArgs()
	other := e.mustDial("web1")
	s, in, out := shell(t, other)
	io.WriteString(in, "echo ready\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]ready\r`))

	for _, tc := range []struct {
		name, command string
		pty           bool
	}{
		{"upload", "cat > upload.bin", false},
		{"output stream", "yes warder-output-line", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := append([]string(nil), args...)
			if tc.pty {
				a = append(a, "-tt")
			}
			cmd := exec.Command("ssh", append(a, "-p", port, "web1@127.0.0.1", tc.command)...)
			up, down := &randomReader{}, &countingWriter{}
			if tc.pty {
				// stdin open and silent: the pty stays up. Wait closes it.
				if _, err := cmd.StdinPipe(); err != nil {
					t.Fatal(err)
				}
			} else {
				cmd.Stdin = up
			}
			cmd.Stdout, cmd.Stderr = down, down
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); up.n.Load() < 4<<20 && down.n.Load() < 1<<20; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("nothing moved: %d bytes up, %d down", up.n.Load(), down.n.Load())
				}
			}
			cmd.Process.Kill() // mid-transfer, without a word to the gateway
			cmd.Wait()

			var info recording.Info
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				list, err := rec.List(context.Background(), recording.Filter{Principal: "user:alice"})
				if err != nil {
					t.Fatal(err)
				}
				for _, i := range list {
					if i.Command == tc.command {
						info = i
					}
				}
				if info.Status != "" && info.Status != recording.StatusActive {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the recording was not closed: %+v", info)
				}
			}
			if info.Status != recording.StatusClosed || info.EndedAt.IsZero() || info.SHA256 == "" {
				t.Errorf("recording %+v; want closed with an end time and a hash", info)
			}
			if tc.pty && info.BytesOut == 0 || !tc.pty && info.BytesIn == 0 {
				t.Errorf("byte counts in %d, out %d", info.BytesIn, info.BytesOut)
			}
			var file bytes.Buffer
			if err := rec.WriteAsciicast(context.Background(), info.ID, &file); err != nil {
				t.Fatalf("the recording does not verify: %v", err)
			}
			sum := sha256.Sum256(file.Bytes())
			evs, err := log.List(context.Background(), audit.Filter{Action: "session.end", Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, ev := range evs {
				if ev.Resource == "session:"+info.ID {
					found = ev.Details["sha256"] == hex.EncodeToString(sum[:]) && ev.Details["status"] == recording.StatusClosed
				}
			}
			if !found {
				t.Errorf("no session.end event with the recording's hash %x", sum)
			}
		})
	}

	io.WriteString(in, "echo still-serving\r")
	out.waitFor(t, regexp.MustCompile(`[\r\n]still-serving\r`))
	io.WriteString(in, "exit\r")
	waitEnded(t, s, 5*time.Second)
}
