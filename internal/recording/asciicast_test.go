package recording

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/errkind"
)

func TestDecodeAsciicastCapture(t *testing.T) {
	data, err := os.ReadFile("testdata/bash.cast")
	if err != nil {
		t.Fatal(err)
	}
	h, evs, err := DecodeAsciicast(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if h.Width != 80 || h.Env["TERM"] != "xterm-256color" || len(evs) != 13 {
		t.Fatalf("header %+v, %d events", h, len(evs))
	}
	if got := Commands(evs); len(got) != 1 || got[0] != "ls" {
		t.Errorf("Commands = %q", got)
	}
}

func TestDecodeAsciicastStrict(t *testing.T) {
	const hdr = `{"version":2,"width":80,"height":24}` + "\n"
	for _, c := range []struct {
		name, in string
		kind     errkind.Kind
	}{
		{"empty", "", errkind.Invalid},
		{"version 1", `{"version":1,"width":80,"height":24}`, errkind.Invalid},
		{"no size", `{"version":2}`, errkind.Invalid},
		{"unknown header field", `{"version":2,"width":80,"height":24,"x":1}`, errkind.Invalid},
		{"trailing header data", `{"version":2,"width":80,"height":24} {}`, errkind.Invalid},
		{"header not an object", `[2]`, errkind.Invalid},
		{"two elements", hdr + `[0.1, "o"]`, errkind.Invalid},
		{"four elements", hdr + `[0.1, "o", "a", "b"]`, errkind.Invalid},
		{"time as string", hdr + `["0.1", "o", "a"]`, errkind.Invalid},
		{"negative time", hdr + `[-1, "o", "a"]`, errkind.Invalid},
		{"time goes back", hdr + "[2, \"o\", \"a\"]\n[1, \"o\", \"b\"]", errkind.Invalid},
		{"unknown type", hdr + `[0.1, "z", "a"]`, errkind.Invalid},
		{"data not a string", hdr + `[0.1, "o", 5]`, errkind.Invalid},
		{"bad resize", hdr + `[0.1, "r", "80"]`, errkind.Invalid},
		{"blank line", hdr + "\n" + `[0.1, "o", "a"]`, errkind.Invalid},
		{"trailing event data", hdr + `[0.1, "o", "a"] x`, errkind.Invalid},
		{"huge line", hdr + `[0.1, "o", "` + strings.Repeat("a", MaxLineBytes) + `"]`, errkind.Invalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := DecodeAsciicast(strings.NewReader(c.in))
			if !errkind.Is(err, c.kind) {
				t.Errorf("error %v, want kind %v", err, c.kind)
			}
		})
	}
	if _, evs, err := DecodeAsciicast(strings.NewReader(hdr + `[0.5, "o", "no newline at the end"]`)); err != nil || len(evs) != 1 {
		t.Errorf("last line without a newline: %d events, %v", len(evs), err)
	}
}

func TestAppendEvent(t *testing.T) {
	line := appendEvent(nil, 1.5, Output, []byte("a\"\\\n\r\t\x00\x1b\x7f\xffé\u2028"))
	want := `[1.500000, "o", "a\"\\\n\r\t\u0000\u001b` + "\x7f" + `\ufffdé` + "\u2028" + `"]` + "\n"
	if string(line) != want {
		t.Fatalf("got  %s\nwant %s", line, want)
	}
	ev, err := parseEvent(line[:len(line)-1], 2)
	if err != nil || ev.Data != "a\"\\\n\r\t\x00\x1b\x7f\uFFFDé\u2028" {
		t.Fatalf("parsed %q, %v", ev.Data, err)
	}
}

func FuzzDecodeAsciicast(f *testing.F) {
	seed, err := os.ReadFile("testdata/bash.cast")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"version":2,"width":80,"height":24}` + "\n" + `[0.1, "q", "{\"sql\":\"SELECT 1\"}"]` + "\n"))
	f.Add([]byte(`{"version":2,"width":1,"height":1,"theme":{"fg":"#fff"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, evs, err := DecodeAsciicast(bytes.NewReader(data))
		if err != nil || len(data) > 64<<10 {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		var b []byte
		b = append(b, encodeHeader(h)...)
		last := 0.0
		for _, ev := range evs {
			if ev.Time < last {
				t.Fatalf("time went back: %v after %v", ev.Time, last)
			}
			last = ev.Time
			b = appendEvent(b, ev.Time, ev.Type, []byte(ev.Data))
		}
		_, evs2, err := DecodeAsciicast(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-encoded file does not decode: %v", err)
		}
		if len(evs2) != len(evs) {
			t.Fatalf("%d events, %d after re-encoding", len(evs), len(evs2))
		}
		for i := range evs {
			if evs[i].Type != evs2[i].Type || evs[i].Data != evs2[i].Data {
				t.Fatalf("event %d: %q %q became %q %q", i, evs[i].Type, evs[i].Data, evs2[i].Type, evs2[i].Data)
			}
		}
		Commands(evs)
	})
}
