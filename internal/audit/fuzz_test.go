package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/warderhq/warder/internal/testenv"
)

// FuzzDecodeEvent checks DecodeEvent never panics and that whatever it
// accepts re-encodes to an event it decodes identically, with an unchanged
// canonical encoding.
func FuzzDecodeEvent(f *testing.F) {
	l := newLog(f, testenv.SQLite(f), Config{})
	for i := range 4 {
		if _, err := l.Append(context.Background(), sampleEvent(i)); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := l.Append(context.Background(), Event{Action: "a", Outcome: OutcomeDeny}); err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.Export(context.Background(), &buf, Filter{}); err != nil {
		f.Fatal(err)
	}
	for _, line := range bytes.SplitAfter(buf.Bytes(), []byte("\n")) {
		if len(line) > 0 {
			f.Add(line)
		}
	}
	f.Add([]byte(`{"seq":1,"seq":2}`))
	f.Add([]byte(`{"SEQ":1}`))
	f.Add([]byte(`{} {}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := DecodeEvent(line)
		if err != nil {
			return
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("accepted event does not re-encode: %v", err)
		}
		ev2, err := DecodeEvent(again)
		if err != nil {
			t.Fatalf("re-encoded event %s refused: %v", again, err)
		}
		if !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, ev2)
		}
		if !bytes.Equal(Canonical(ev), Canonical(ev2)) {
			t.Fatal("round trip changed the canonical encoding")
		}
	})
}

// FuzzCanonical checks that distinct events never share a canonical
// encoding: moving bytes between adjacent fields changes it.
func FuzzCanonical(f *testing.F) {
	f.Add("user:alice", "sys.unseal", "k", "v", int64(1))
	f.Add("", "a", "", "", int64(0))
	f.Fuzz(func(t *testing.T, actor, action, k, v string, seq int64) {
		a := Event{Seq: seq, Actor: actor, Action: action, Details: map[string]string{k: v}}
		for _, b := range []Event{
			{Seq: seq, Actor: actor + action, Details: map[string]string{k: v}},
			{Seq: seq, Actor: actor, Action: action, Details: map[string]string{k + v: ""}},
			{Seq: seq, Actor: actor, Action: action, Resource: k, Details: map[string]string{"": v}},
			{Seq: seq + 1, Actor: actor, Action: action, Details: map[string]string{k: v}},
		} {
			if !reflect.DeepEqual(a, b) && bytes.Equal(Canonical(a), Canonical(b)) {
				t.Fatalf("distinct events share an encoding:\n%+v\n%+v", a, b)
			}
		}
	})
}
