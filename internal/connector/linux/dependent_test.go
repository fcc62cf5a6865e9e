package linux

import (
	"bytes"
	"regexp"
	"testing"
)

func regexpMust(t *testing.T, expr string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(expr)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

// FuzzReplaceLine checks replaceLine on arbitrary file content (it parses
// what it reads from the target): exactly one line becomes the new one, and
// the others are kept byte for byte, in order.
func FuzzReplaceLine(f *testing.F) {
	f.Add([]byte("A=1\nDATABASE_PASSWORD=old\nB=2\n"), "^DATABASE_PASSWORD=")
	f.Add([]byte("A=1\r\nDATABASE_PASSWORD=old\r\n"), "^DATABASE_PASSWORD=")
	f.Add([]byte("no final newline"), "^X=")
	f.Add([]byte(""), ".")
	f.Add([]byte("\n\n\n"), "^$")
	const line = "NEW=line"
	f.Fuzz(func(t *testing.T, content []byte, match string) {
		re, err := regexp.Compile(match)
		if err != nil {
			return
		}
		got := replaceLine(content, re, line)
		// An independent rendering: split after each "\n", replace the
		// first line whose text (without "\n" and "\r") matches.
		var want []byte
		replaced := false
		for _, l := range bytes.SplitAfter(content, []byte("\n")) {
			text := bytes.TrimSuffix(l, []byte("\n"))
			text, cr := bytes.CutSuffix(text, []byte("\r"))
			if len(l) == 0 || replaced || !re.Match(text) {
				want = append(want, l...)
				continue
			}
			replaced = true
			want = append(want, line...)
			if cr {
				want = append(want, '\r')
			}
			if bytes.HasSuffix(l, []byte("\n")) {
				want = append(want, '\n')
			}
		}
		if !replaced {
			if len(want) > 0 && want[len(want)-1] != '\n' {
				want = append(want, '\n')
			}
			want = append(want, line+"\n"...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("replaceLine(%q, %q):\n%q\nwant:\n%q", content, match, got, want)
		}
	})
}
