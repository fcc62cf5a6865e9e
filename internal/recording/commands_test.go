package recording

import (
	"bytes"
	"os"
	"slices"
	"testing"
	"unicode/utf8"
)

func TestCommands(t *testing.T) {
	for _, c := range []struct {
		name  string
		input []string // Input events
		want  []string
	}{
		{"plain", []string{"ls -la\r"}, []string{"ls -la"}},
		{"one key per event", []string{"p", "w", "d", "\r"}, []string{"pwd"}},
		{"backspace and DEL", []string{"lss\x7f -l\x08a\r"}, []string{"ls -a"}},
		{"backspace at start", []string{"\x7f\x7fid\r"}, []string{"id"}},
		{"ctrl-u", []string{"rm -rf /\x15echo hi\r"}, []string{"echo hi"}},
		{"ctrl-u kills before the cursor", []string{"abcdef\x1b[D\x1b[D\x15\r"}, []string{"ef"}},
		{"ctrl-w", []string{"git commit --amend\x17\x17status\r"}, []string{"git status"}},
		{"ctrl-w over blanks", []string{"echo one   \x17two\r"}, []string{"echo two"}},
		{"arrows and insert", []string{"ech hi\x1b[D\x1b[D\x1b[Do\r"}, []string{"echo hi"}},
		{"right arrow", []string{"ab\x1b[D\x1b[D\x1b[Cx\r"}, []string{"axb"}},
		{"application cursor keys", []string{"ab\x1bODx\r"}, []string{"axb"}},
		{"home and end", []string{"cho\x1b[Hs\x1b[F!\r"}, []string{"scho!"}},
		{"home end tilde", []string{"b\x1b[1~a\x1b[4~c\r"}, []string{"abc"}},
		{"ctrl-a ctrl-e", []string{"b\x01a\x05c\r"}, []string{"abc"}},
		{"delete key", []string{"abc\x01\x1b[3~\r"}, []string{"bc"}},
		{"ctrl-k and yank", []string{"hello world\x01\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x0b\x01\x19 \r"}, []string{" world hello"}},
		{"word moves", []string{"one two three\x1b[1;5DX\x1bbY\r"}, []string{"one two YXthree"}},
		{"alt-backspace", []string{"cd /var/log\x1b\x7f\r"}, []string{"cd /var/"}},
		{"CRLF is one Enter", []string{"a\r\nb\r\n"}, []string{"a", "b"}},
		{"LF alone", []string{"a\nb\n"}, []string{"a", "b"}},
		{"CR then LF in the next event", []string{"a\r", "\nb\r"}, []string{"a", "b"}},
		{"blank lines left out", []string{"\r\r   \r"}, nil},
		{"ctrl-c abandons", []string{"rm -rf /\x03ls\r"}, []string{"ls"}},
		{"utf-8", []string{"echo héllo ✓\r"}, []string{"echo héllo ✓"}},
		{"utf-8 split across events", []string{"echo \xc3", "\xa9\r"}, []string{"echo é"}},
		{"utf-8 backspace deletes a character", []string{"echo é✓\x7f\x7fe\r"}, []string{"echo e"}},
		{"utf-8 arrows", []string{"日本\x1b[Dx\r"}, []string{"日x本"}},
		{"invalid utf-8", []string{"a\xffb\r"}, []string{"a\uFFFDb"}},
		{"truncated utf-8 then ascii", []string{"a\xe2\x9cb\r"}, []string{"a\uFFFDb"}},
		{"history", []string{"\x1b[A\r"}, []string{HistoryMark}},
		{"history then edit", []string{"\x1b[A -v\r"}, []string{HistoryMark + " -v"}},
		{"reverse search", []string{"\x12ssh\r"}, []string{HistoryMark + "ssh"}},
		{"tab completion", []string{"cat /etc/pas\tx\r"}, []string{CompletionMark + "cat /etc/pasx"}},
		{"unknown escapes ignored", []string{"a\x1b[200~b\x1b[201~\x1b[?1hc\r"}, []string{"abc"}},
		{"unterminated line not returned", []string{"ls", "\r", "half"}, []string{"ls"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var evs []Event
			for _, in := range c.input {
				evs = append(evs, Event{Type: Input, Data: in}, Event{Type: Output, Data: "noise\r"})
			}
			got := Commands(evs)
			if len(got) == 0 && len(c.want) == 0 {
				return
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Commands(%q) = %q, want %q", c.input, got, c.want)
			}
		})
	}
}

func TestLineBufferIncremental(t *testing.T) {
	var b LineBuffer
	if got := b.Feed([]byte("sudo su")); got != nil {
		t.Fatalf("incomplete line returned %q", got)
	}
	if got := b.Feed([]byte(" -\rid\r")); !slices.Equal(got, []string{"sudo su -", "id"}) {
		t.Fatalf("Feed = %q", got)
	}
}

func TestLineBufferBounds(t *testing.T) {
	var b LineBuffer
	long := make([]byte, 3*MaxCommandRunes)
	for i := range long {
		long[i] = 'a'
	}
	got := b.Feed(append(long, '\r'))
	if len(got) != 1 || utf8.RuneCountInString(got[0]) != MaxCommandRunes {
		t.Fatalf("a long line gave %d lines of %d characters", len(got), len(got[0]))
	}
	esc := append([]byte("\x1b["), make([]byte, 1000)...)
	for i := 2; i < len(esc); i++ {
		esc[i] = '1'
	}
	if got := b.Feed(append(esc, []byte("Dok\r")...)); !slices.Equal(got, []string{"ok"}) {
		t.Fatalf("after a long escape: %q", got)
	}
}

func FuzzCommands(f *testing.F) {
	for _, s := range []string{"ls -la\r", "ech hi\x1b[D\x1b[Do\r", "日本\x7f\x15\x17\r\n", "\x1b[1;5D\x1bO", "\xc3", "\x1b[A\x12\t\x19\x0b\r"} {
		f.Add([]byte(s), 3)
	}
	// What a person typed in a real bash session (the asciicast decoder's
	// seed too).
	if raw, err := os.ReadFile("testdata/bash.cast"); err == nil {
		if _, evs, err := DecodeAsciicast(bytes.NewReader(raw)); err == nil {
			var typed []byte
			for _, ev := range evs {
				if ev.Type == Input {
					typed = append(typed, ev.Data...)
				}
			}
			f.Add(typed, len(typed)/2)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		// Whole and in two events: the same lines.
		whole := Commands([]Event{{Type: Input, Data: string(data)}})
		if split < 0 {
			split = -split
		}
		if len(data) > 0 {
			split %= len(data) + 1
		} else {
			split = 0
		}
		var b LineBuffer
		parts := append(b.Feed(data[:split]), b.Feed(data[split:])...)
		if !slices.Equal(whole, parts) && !(len(whole) == 0 && len(parts) == 0) {
			t.Fatalf("whole %q, split at %d %q", whole, split, parts)
		}
		if len(whole) > len(data) {
			t.Fatalf("%d lines from %d bytes", len(whole), len(data))
		}
		for _, l := range whole {
			if utf8.RuneCountInString(l) > MaxCommandRunes+len(HistoryMark)+len(CompletionMark) || !utf8.ValidString(l) {
				t.Fatalf("line of %d bytes, valid %v", len(l), utf8.ValidString(l))
			}
		}
	})
}
