package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// TestTamper builds a 20-event chain with checkpoints at seq 10 and 20,
// tampers with it directly in SQL, and checks Verify names the right seq.
func TestTamper(t *testing.T) {
	forged := func(seq int64) Event {
		ev := sampleEvent(1000)
		ev.Seq = seq
		ev.Actor = "user:mallory"
		ev.Time = store.FromMicros(1_740_000_000_000_000)
		return ev
	}
	insert := func(t *testing.T, db *store.DB, ev Event) {
		d, _ := encodeDetails(ev.Details)
		mustExec(t, db, `INSERT INTO audit_events (seq, time_us, actor, action, resource, outcome, source, request_id, details, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			ev.Seq, store.Micros(ev.Time), ev.Actor, ev.Action, ev.Resource, ev.Outcome, ev.Source, ev.RequestID, d, ev.PrevHash, ev.Hash)
	}
	// shiftFrom renumbers events seq >= from up by one, leaving a hole at from.
	shiftFrom := func(t *testing.T, db *store.DB, from int64) {
		mustExec(t, db, `UPDATE audit_events SET seq = seq + 1000 WHERE seq >= $1`, from)
		mustExec(t, db, `UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000`)
	}
	tests := []struct {
		name    string
		tamper  func(t *testing.T, db *store.DB, l *Log, evs []Event)
		wantSeq int64
		reason  string
	}{
		{"update actor", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 5`)
		}, 5, "content"},
		{"update outcome", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `UPDATE audit_events SET outcome = 'allow' WHERE seq = 4`)
		}, 4, "content"},
		{"update details", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `UPDATE audit_events SET details = '{"hmac":"5e1f00aa","n":"7","note":"edited"}' WHERE seq = 7`)
		}, 7, "content"},
		{"corrupt details", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `UPDATE audit_events SET details = 'not json' WHERE seq = 9`)
		}, 9, "details"},
		{"update time", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `UPDATE audit_events SET time_us = time_us + 1 WHERE seq = 3`)
		}, 3, "content"},
		{"delete middle", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq = 8`)
		}, 8, "missing"},
		{"delete first", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq = 1`)
		}, 1, "missing"},
		{"delete checkpointed tail", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq >= 18`)
		}, 18, "tail deleted"},
		{"insert forged tail with a made-up hash", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			ev := forged(21)
			ev.PrevHash = evs[19].Hash
			sum := sha256.Sum256([]byte(ev.PrevHash + ev.Actor))
			ev.Hash = hex.EncodeToString(sum[:])
			insert(t, db, ev)
		}, 21, "content"},
		{"insert forged middle with a correct hash", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			shiftFrom(t, db, 13)
			ev := forged(13)
			ev.PrevHash = evs[11].Hash
			ev.Hash = chainHash(mustHash(t, ev.PrevHash), ev)
			insert(t, db, ev)
		}, 14, "prev_hash"},
		{"insert forged middle and rewrite the rest of the chain", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			shiftFrom(t, db, 13)
			ev := forged(13)
			ev.PrevHash = evs[11].Hash
			ev.Hash = chainHash(mustHash(t, ev.PrevHash), ev)
			insert(t, db, ev)
			prev := ev.Hash
			for _, old := range evs[12:] {
				old.Seq++
				old.PrevHash = prev
				old.Hash = chainHash(mustHash(t, prev), old)
				mustExec(t, db, `UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3`, old.PrevHash, old.Hash, old.Seq)
				prev = old.Hash
			}
		}, 20, "checkpoint"},
		{"swap two events", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `UPDATE audit_events SET seq = 1000 WHERE seq = 5`)
			mustExec(t, db, `UPDATE audit_events SET seq = 5 WHERE seq = 6`)
			mustExec(t, db, `UPDATE audit_events SET seq = 6 WHERE seq = 1000`)
		}, 5, "prev_hash"},
		{"update checkpoint signature", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			_, priv, _ := ed25519.GenerateKey(nil)
			msg, _ := CheckpointMessage(10, evs[9].Hash, evs[9].Time)
			sig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, msg))
			mustExec(t, db, `UPDATE audit_checkpoints SET signature = $1 WHERE seq = 10`, sig)
		}, 10, "signature"},
		{"update checkpoint time", func(t *testing.T, db *store.DB, l *Log, evs []Event) {
			mustExec(t, db, `UPDATE audit_checkpoints SET time_us = time_us + 1 WHERE seq = 20`)
		}, 20, "signature"},
	}
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					ctx := context.Background()
					db := be.Open(t)
					signer := newTestSigner(t)
					l := newLog(t, db, Config{Signer: signer, Now: newFakeClock().Now})
					evs := appendN(t, l, 10)
					if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
						t.Fatalf("Checkpoint: %v, %v", ok, err)
					}
					evs = append(evs, appendN(t, l, 10)...)
					if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
						t.Fatalf("Checkpoint: %v, %v", ok, err)
					}
					rep, err := l.Verify(ctx, signer.pub())
					if err != nil || !rep.OK || rep.Events != 20 || rep.Checkpoints != 2 || rep.Head != evs[19].Hash {
						t.Fatalf("Verify before tampering: %+v, %v", rep, err)
					}

					tt.tamper(t, db, l, evs)

					rep, err = l.Verify(ctx, signer.pub())
					if err != nil {
						t.Fatalf("Verify: %v", err)
					}
					if rep.OK || rep.FirstBad == nil {
						t.Fatalf("tampering not detected: %+v", rep)
					}
					if rep.FirstBad.Seq != tt.wantSeq || !strings.Contains(rep.FirstBad.Reason, tt.reason) {
						t.Errorf("FirstBad = %+v, want seq %d and a reason containing %q", *rep.FirstBad, tt.wantSeq, tt.reason)
					}

					// The offline path must reach the same verdict (Export
					// refuses a row whose details are not JSON).
					if tt.reason == "details" {
						return
					}
					var buf bytes.Buffer
					if err := l.Export(ctx, &buf, Filter{}); err != nil {
						t.Fatal(err)
					}
					cps, err := l.Checkpoints(ctx, 0, 0)
					if err != nil {
						t.Fatal(err)
					}
					off, err := VerifyStream(&buf, cps, signer.pub())
					if err != nil {
						t.Fatal(err)
					}
					if off.OK || off.FirstBad.Seq != tt.wantSeq {
						t.Errorf("VerifyStream: %+v, want FirstBad at seq %d", off, tt.wantSeq)
					}
				})
			}
		})
	}
}

func mustHash(t *testing.T, h string) []byte {
	t.Helper()
	b, err := decodeHash(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyStream(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t)
	l := newLog(t, testenv.SQLite(t), Config{Signer: signer})
	appendN(t, l, 30)
	if _, _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.Export(ctx, &buf, Filter{}); err != nil {
		t.Fatal(err)
	}
	cps, _ := l.Checkpoints(ctx, 0, 0)
	export := buf.String()
	lines := strings.SplitAfter(export, "\n")
	tests := []struct {
		name    string
		input   string
		pub     ed25519.PublicKey
		wantOK  bool
		wantBad int64
	}{
		{"intact", export, signer.pub(), true, 0},
		{"intact without key", export, nil, true, 0},
		{"wrong key", export, newTestSigner(t).pub(), false, 30},
		{"edited line", strings.Replace(export, `"req-4"`, `"req-X"`, 1), signer.pub(), false, 5},
		{"dropped line", strings.Join(append(append([]string{}, lines[:9]...), lines[10:]...), ""), signer.pub(), false, 10},
		{"garbage line", strings.Join(append(append([]string{}, lines[:2]...), "{nope}\n"), ""), signer.pub(), false, 3},
		{"truncated", strings.Join(lines[:20], ""), signer.pub(), false, 21},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := VerifyStream(strings.NewReader(tt.input), cps, tt.pub)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK != tt.wantOK || (!tt.wantOK && rep.FirstBad.Seq != tt.wantBad) {
				t.Errorf("VerifyStream: %+v (first bad %+v), want OK=%v bad seq %d", rep, rep.FirstBad, tt.wantOK, tt.wantBad)
			}
		})
	}
}
