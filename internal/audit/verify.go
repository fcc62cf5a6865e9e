package audit

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Problem is the first inconsistency Verify found.
type Problem struct {
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

// Report is the result of Verify.
type Report struct {
	OK          bool   `json:"ok"`
	Events      int64  `json:"events"`      // events whose hash and link were verified
	Checkpoints int    `json:"checkpoints"` // checkpoints verified
	Head        string `json:"head"`        // hash of the last verified event
	// Checkpointed is the seq of the last verified checkpoint. Events after
	// it are protected by the chain only (see the package comment).
	Checkpointed int64    `json:"checkpointed"`
	FirstBad     *Problem `json:"first_bad,omitempty"`
}

// errStop ends a scan early once a problem is found.
var errStop = errors.New("audit: stop")

// verifier is the core shared by Verify, VerifyStream and Checkpoint: it is
// fed events in storage order and checkpoints in seq order, and keeps only
// the previous hash, so memory does not grow with the chain.
type verifier struct {
	pub     ed25519.PublicKey                // nil: signatures are not checked
	cps     func() (Checkpoint, bool, error) // next checkpoint in seq order
	cp      Checkpoint                       // pending checkpoint, if haveCP
	haveCP  bool
	next    int64  // the seq the next event must have
	prevRaw []byte // hash of event next-1 (genesis: zeros)
	rep     Report

	// tailSeq and tailTime are the seq and time of the first event after
	// the last verified checkpoint (tailSeq 0: there is none).
	tailSeq  int64
	tailTime time.Time
}

// newVerifier starts at genesis; cps may be nil for no checkpoints.
func newVerifier(pub ed25519.PublicKey, cps func() (Checkpoint, bool, error)) (*verifier, error) {
	v, _ := resumeVerifier(0, GenesisHash)
	v.pub, v.cps = pub, cps
	return v, v.pull()
}

// resumeVerifier starts after event seq, whose hash is hash.
func resumeVerifier(seq int64, hash string) (*verifier, error) {
	raw, err := decodeHash(hash)
	if err != nil {
		return nil, err
	}
	return &verifier{next: seq + 1, prevRaw: raw, rep: Report{Head: hash}}, nil
}

// pull loads the next checkpoint, if any.
func (v *verifier) pull() error {
	v.haveCP = false
	if v.cps == nil {
		return nil
	}
	cp, ok, err := v.cps()
	if err != nil {
		return err
	}
	v.cp, v.haveCP = cp, ok
	return nil
}

// event checks ev (whose details failed to decode if derr is set) and the
// checkpoints up to its seq. It returns the first problem, or an error if
// reading checkpoints failed.
func (v *verifier) event(ev Event, derr error) (*Problem, error) {
	switch {
	case ev.Seq > v.next:
		return &Problem{v.next, fmt.Sprintf("event %d is missing (deleted): the next stored event is %d", v.next, ev.Seq)}, nil
	case ev.Seq < v.next:
		return &Problem{ev.Seq, fmt.Sprintf("event %d is out of order: expected seq %d", ev.Seq, v.next)}, nil
	case derr != nil:
		return &Problem{ev.Seq, "details are not a JSON object of strings (event altered)"}, nil
	case ev.PrevHash != hex.EncodeToString(v.prevRaw):
		return &Problem{ev.Seq, fmt.Sprintf("prev_hash is not the hash of event %d (event inserted, reordered or altered)", ev.Seq-1)}, nil
	}
	h := chainHash(v.prevRaw, ev)
	if ev.Hash != h {
		return &Problem{ev.Seq, "hash does not match the event's content (event altered)"}, nil
	}
	for v.haveCP && v.cp.Seq <= ev.Seq {
		if p := v.checkpoint(ev); p != nil {
			return p, nil
		}
		if err := v.pull(); err != nil {
			return nil, err
		}
	}
	v.prevRaw, _ = hex.DecodeString(h)
	v.next++
	v.rep.Events++
	v.rep.Head = h
	if v.rep.Checkpointed == ev.Seq {
		v.tailSeq = 0
	} else if v.tailSeq == 0 {
		v.tailSeq, v.tailTime = ev.Seq, ev.Time
	}
	return nil, nil
}

// checkpoint checks the pending checkpoint against ev, whose hash has been
// recomputed.
func (v *verifier) checkpoint(ev Event) *Problem {
	cp := v.cp
	if cp.Seq < ev.Seq {
		return &Problem{cp.Seq, fmt.Sprintf("checkpoint at seq %d names no event of the chain", cp.Seq)}
	}
	if cp.Hash != ev.Hash {
		return &Problem{cp.Seq, "event differs from the one the signed checkpoint at this seq covers (chain rewritten)"}
	}
	if v.pub != nil && !validSignature(v.pub, cp) {
		return &Problem{cp.Seq, "checkpoint signature is invalid"}
	}
	v.rep.Checkpoints++
	v.rep.Checkpointed = cp.Seq
	return nil
}

// finish reports a checkpoint beyond the last event: the tail was deleted.
func (v *verifier) finish() *Problem {
	if v.haveCP {
		return &Problem{v.next, fmt.Sprintf("events %d to %d are missing (tail deleted): the checkpoint at seq %d is beyond the last event",
			v.next, v.cp.Seq, v.cp.Seq)}
	}
	return nil
}

// unsigned reports the first event after the last checkpoint if it is
// older than maxAge at now, or if more than maxEvents events follow the
// last checkpoint: checkpoints are written more often than that, so the
// ones covering it were probably deleted.
func (v *verifier) unsigned(now time.Time, maxAge time.Duration, maxEvents int64) *Problem {
	if v.tailSeq == 0 {
		return nil
	}
	if now.Sub(v.tailTime) > maxAge {
		return &Problem{v.tailSeq, fmt.Sprintf("not covered by a signed checkpoint although it is older than %s: checkpoints may have been deleted", maxAge)}
	}
	if n := v.next - v.tailSeq; n > maxEvents {
		return &Problem{v.tailSeq, fmt.Sprintf("not covered by a signed checkpoint although %d events follow the last checkpoint, more than %d: checkpoints may have been deleted", n, maxEvents)}
	}
	return nil
}

// report completes the report with p, the first problem or nil.
func (v *verifier) report(p *Problem) Report {
	r := v.rep
	r.FirstBad = p
	r.OK = p == nil
	return r
}

// Verify checks the whole stored chain from seq 1: it recomputes every hash
// and link, checks that seqs run from 1 without gaps, that every checkpoint
// names an event with its hash and (if pub is not nil) carries a valid
// signature by pub, and that no checkpoint lies beyond the last event.
//
// With pub, Verify also requires the chain to be signed: the first event
// after the last checkpoint (or event 1 when there is no checkpoint) must
// not be older than 2×CheckpointInterval by the Log's clock, and at most
// 2×CheckpointEvery events may follow the last checkpoint. A running,
// unsealed server checkpoints far more often, so an older or longer
// unsigned tail means checkpoints were deleted (perhaps to hide a rewritten
// chain) or that checkpointing has failed for a while; both need looking
// into.
//
// Memory use does not grow with the chain. Events and checkpoints written
// while Verify runs may be left out. Verify holds one read connection while
// it runs (checkpoints are read in pages beside it); Verify calls on one
// Log run one at a time.
//
// A broken chain is reported in the Report (OK false, FirstBad the lowest
// bad seq); the error is only for failures to read.
func (l *Log) Verify(ctx context.Context, pub ed25519.PublicKey) (Report, error) {
	l.verifyMu.Lock()
	defer l.verifyMu.Unlock()
	now := l.now()
	// Read the checkpoint bound first: a checkpoint only names a committed
	// event, so every checkpoint up to cpMax names an event up to evMax.
	var cpMax, evMax int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints`).Scan(&cpMax); err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&evMax); err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	v, err := newVerifier(pub, l.checkpointPager(ctx, cpMax))
	if err != nil {
		return Report{}, err
	}
	var bad *Problem
	err = l.scan(ctx, `SELECT `+eventColumns+` FROM audit_events WHERE seq <= $1 ORDER BY seq`, []any{evMax},
		func(ev Event, derr error) error {
			p, err := v.event(ev, derr)
			if p != nil {
				bad = p
				return errStop
			}
			return err
		})
	if err != nil && !errors.Is(err, errStop) {
		return Report{}, err
	}
	if bad == nil {
		bad = v.finish()
	}
	if bad == nil && pub != nil {
		bad = v.unsigned(now, 2*l.interval, 2*int64(l.every))
	}
	return v.report(bad), nil
}

// checkpointPage is how many checkpoints Verify reads per query.
const checkpointPage = 1000

// checkpointPager returns the checkpoints with seq <= maxSeq one at a time
// in seq order, reading them a page at a time so that no connection is
// held between pages.
func (l *Log) checkpointPager(ctx context.Context, maxSeq int64) func() (Checkpoint, bool, error) {
	var page []Checkpoint
	var after int64
	done := maxSeq == 0
	return func() (Checkpoint, bool, error) {
		if len(page) == 0 && !done {
			var err error
			if page, err = l.readCheckpoints(ctx, after, maxSeq, checkpointPage); err != nil {
				return Checkpoint{}, false, fmt.Errorf("audit: verify: %w", err)
			}
			done = len(page) < checkpointPage
			if len(page) > 0 {
				after = page[len(page)-1].Seq
			}
		}
		if len(page) == 0 {
			return Checkpoint{}, false, nil
		}
		cp := page[0]
		page = page[1:]
		return cp, true, nil
	}
}

// VerifyStream verifies an Export of the whole log (JSON Lines from seq 1)
// offline, with the same checks as Verify, against checkpoints (in any
// order) and pub (nil: signatures are not checked). A line DecodeEvent
// refuses is a problem at the seq expected there. The error is only for
// failures to read r.
func VerifyStream(r io.Reader, checkpoints []Checkpoint, pub ed25519.PublicKey) (Report, error) {
	cps := slices.Clone(checkpoints)
	slices.SortStableFunc(cps, func(a, b Checkpoint) int { return cmp.Compare(a.Seq, b.Seq) })
	i := 0
	v, _ := newVerifier(pub, func() (Checkpoint, bool, error) {
		if i == len(cps) {
			return Checkpoint{}, false, nil
		}
		i++
		return cps[i-1], true, nil
	})
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes+2)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		ev, err := DecodeEvent(sc.Bytes())
		if err != nil {
			return v.report(&Problem{v.next, fmt.Sprintf("line %d: %v", line, err)}), nil
		}
		if p, _ := v.event(ev, nil); p != nil {
			return v.report(p), nil
		}
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		return v.report(&Problem{v.next, "line too long"}), nil
	} else if err != nil {
		return Report{}, fmt.Errorf("audit: verify stream: %w", err)
	}
	return v.report(v.finish()), nil
}
