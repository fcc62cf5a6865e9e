package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/testenv"
)

// rewriteChain changes the actor of event seq and recomputes the hash of
// every event from there on, as an attacker able to write the database
// would, so that the chain is consistent again. evs are the events as
// stored (evs[i] has seq i+1).
func rewriteChain(t *testing.T, db *store.DB, evs []Event, seq int64) {
	t.Helper()
	evs[seq-1].Actor = "user:mallory"
	mustExec(t, db, `UPDATE audit_events SET actor = 'user:mallory' WHERE seq = $1`, seq)
	prev := evs[seq-1].PrevHash
	for i := seq - 1; i < int64(len(evs)); i++ {
		ev := &evs[i]
		ev.PrevHash = prev
		ev.Hash = chainHash(mustHash(t, prev), *ev)
		mustExec(t, db, `UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3`, ev.PrevHash, ev.Hash, ev.Seq)
		prev = ev.Hash
	}
}

// TestCheckpointDeletion deletes checkpoints, alone or to hide a rewrite of
// the chain, and checks that the running Log refuses to sign over it and
// that Verify reports it once the unsigned events are older than
// 2×CheckpointInterval.
func TestCheckpointDeletion(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(t *testing.T, db *store.DB, evs []Event)
		wantSeq int64 // Verify's FirstBad once the clock has moved on
		refusal string
	}{
		{"delete all checkpoints and rewrite the chain", func(t *testing.T, db *store.DB, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_checkpoints`)
			rewriteChain(t, db, evs, 2)
		}, 1, "no checkpoint is stored"},
		{"delete all checkpoints", func(t *testing.T, db *store.DB, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_checkpoints`)
		}, 1, "no checkpoint is stored"},
		{"delete the last checkpoint", func(t *testing.T, db *store.DB, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_checkpoints WHERE seq = 20`)
		}, 11, "last stored checkpoint is at seq 10"},
		{"delete the last checkpoint and rewrite after the one before", func(t *testing.T, db *store.DB, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_checkpoints WHERE seq = 20`)
			rewriteChain(t, db, evs, 15)
		}, 11, "last stored checkpoint is at seq 10"},
		{"truncate the tail with its checkpoint", func(t *testing.T, db *store.DB, evs []Event) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq >= 18`)
			mustExec(t, db, `DELETE FROM audit_checkpoints WHERE seq = 20`)
		}, 11, "last stored checkpoint is at seq 10"},
	}
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					ctx := context.Background()
					db := be.Open(t)
					signer := newTestSigner(t)
					clock := newFakeClock()
					l := newLog(t, db, Config{Signer: signer, Now: clock.Now, CheckpointInterval: time.Minute})
					evs := appendN(t, l, 10)
					if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
						t.Fatalf("Checkpoint: %v, %v", ok, err)
					}
					evs = append(evs, appendN(t, l, 10)...)
					if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
						t.Fatalf("Checkpoint: %v, %v", ok, err)
					}
					before, err := l.Checkpoints(ctx, 0, 0)
					if err != nil {
						t.Fatal(err)
					}

					tt.tamper(t, db, evs)

					// The Log that wrote the checkpoints refuses to sign,
					// whether or not events were appended since.
					for round := range 2 {
						if _, ok, err := l.Checkpoint(ctx); ok || !errkind.Is(err, errkind.Conflict) || !strings.Contains(err.Error(), tt.refusal) {
							t.Fatalf("Checkpoint after tampering (round %d): %v, %v; want a Conflict error containing %q", round, ok, err, tt.refusal)
						}
						appendN(t, l, 1)
					}
					after, err := l.Checkpoints(ctx, 0, 0)
					if err != nil {
						t.Fatal(err)
					}
					if len(after) >= len(before) {
						t.Fatalf("checkpoints after the refusals: %+v", after)
					}
					for _, cp := range after {
						if cp.Seq > 10 {
							t.Fatalf("a checkpoint was signed over the tampered chain: %+v", cp)
						}
					}

					clock.advance(3 * time.Minute)
					rep, err := l.Verify(ctx, signer.pub())
					if err != nil {
						t.Fatal(err)
					}
					if rep.OK || rep.FirstBad == nil || rep.FirstBad.Seq != tt.wantSeq ||
						!strings.Contains(rep.FirstBad.Reason, "not covered by a signed checkpoint although it is older than 2m0s: checkpoints may have been deleted") {
						t.Errorf("Verify: %+v (first bad %+v); want FirstBad at seq %d naming the unsigned events", rep, rep.FirstBad, tt.wantSeq)
					}
				})
			}
		})
	}
}

// TestCheckpointForged replaces the checkpoints of a rewritten chain with
// one made with another key, and checks that a Log started afterwards (a
// restarted server, which remembers nothing) refuses to sign after it.
func TestCheckpointForged(t *testing.T) {
	for _, be := range testenv.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			ctx := context.Background()
			db := be.Open(t)
			signer := newTestSigner(t)
			clock := newFakeClock()
			l := newLog(t, db, Config{Signer: signer, Now: clock.Now})
			evs := appendN(t, l, 10)
			if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
				t.Fatalf("Checkpoint: %v, %v", ok, err)
			}
			l.Close()

			mustExec(t, db, `DELETE FROM audit_checkpoints`)
			rewriteChain(t, db, evs, 2)
			_, priv, _ := ed25519.GenerateKey(nil)
			msg, _ := CheckpointMessage(10, evs[9].Hash, evs[9].Time)
			mustExec(t, db, `INSERT INTO audit_checkpoints (seq, hash, time_us, signature) VALUES ($1, $2, $3, $4)`,
				10, evs[9].Hash, store.Micros(evs[9].Time), base64.StdEncoding.EncodeToString(ed25519.Sign(priv, msg)))

			restarted := newLog(t, db, Config{Signer: signer, Now: clock.Now})
			appendN(t, restarted, 1)
			if _, ok, err := restarted.Checkpoint(ctx); ok || !errkind.Is(err, errkind.Conflict) || !strings.Contains(err.Error(), "no valid signature") {
				t.Fatalf("Checkpoint after a forged checkpoint: %v, %v; want a Conflict error", ok, err)
			}
			if cps, _ := restarted.Checkpoints(ctx, 10, 0); len(cps) != 0 {
				t.Fatalf("a checkpoint was signed after the forged one: %+v", cps)
			}
		})
	}
}

// TestVerifyUnsigned checks the age and length limits on events no
// checkpoint covers.
func TestVerifyUnsigned(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t)
	clock := newFakeClock()
	l := newLog(t, testenv.SQLite(t), Config{Signer: signer, Now: clock.Now, CheckpointInterval: time.Minute, CheckpointEvery: 5})
	check := func(name string, pub ed25519.PublicKey, wantBad int64, reason string) {
		t.Helper()
		rep, err := l.Verify(ctx, pub)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case wantBad == 0 && !rep.OK:
			t.Errorf("%s: %+v (first bad %+v), want OK", name, rep, rep.FirstBad)
		case wantBad != 0 && (rep.OK || rep.FirstBad.Seq != wantBad || !strings.Contains(rep.FirstBad.Reason, reason)):
			t.Errorf("%s: %+v (first bad %+v), want FirstBad at seq %d with %q", name, rep, rep.FirstBad, wantBad, reason)
		}
	}
	check("empty log", signer.pub(), 0, "")
	appendN(t, l, 3)
	check("fresh log, no checkpoint yet", signer.pub(), 0, "")
	clock.advance(2 * time.Minute)
	check("no checkpoint for over 2 minutes", signer.pub(), 1, "older than 2m0s")
	check("without a key", nil, 0, "")
	if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
		t.Fatalf("Checkpoint: %v, %v", ok, err)
	}
	check("all signed", signer.pub(), 0, "")
	appendN(t, l, 10)
	check("10 unsigned events", signer.pub(), 0, "")
	appendN(t, l, 1)
	check("11 unsigned events", signer.pub(), 4, "11 events follow the last checkpoint, more than 10")
	if _, ok, err := l.Checkpoint(ctx); !ok || err != nil {
		t.Fatalf("Checkpoint: %v, %v", ok, err)
	}
	appendN(t, l, 1)
	clock.advance(100 * time.Second)
	check("tail just under 2 minutes old", signer.pub(), 0, "")
	clock.advance(30 * time.Second)
	check("tail over 2 minutes old", signer.pub(), 15, "older than 2m0s")
}
