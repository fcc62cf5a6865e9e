package termqr

import (
	"strings"
	"testing"
	"unicode/utf8"

	"rsc.io/qr"
)

func TestRender(t *testing.T) {
	for _, text := range []string{
		"hello",
		"otpauth://totp/Warder:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Warder&algorithm=SHA1&digits=6&period=30",
	} {
		t.Run(text[:5], func(t *testing.T) {
			out, err := Render(text)
			if err != nil {
				t.Fatal(err)
			}
			code, err := qr.Encode(text, qr.M)
			if err != nil {
				t.Fatal(err)
			}
			side := code.Size + 2*QuietZone
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != (side+1)/2 {
				t.Fatalf("%d lines, want %d", len(lines), (side+1)/2)
			}
			// Decode the drawing back into modules and compare with the code.
			for row, line := range lines {
				if n := utf8.RuneCountInString(line); n != side {
					t.Fatalf("line %d has %d runes, want %d", row, n, side)
				}
				for col, r := range []rune(line) {
					var top, bottom bool // light?
					switch r {
					case '█':
						top, bottom = true, true
					case '▀':
						top = true
					case '▄':
						bottom = true
					case ' ':
					default:
						t.Fatalf("line %d has rune %q", row, r)
					}
					x, y := col-QuietZone, 2*row-QuietZone
					if top == code.Black(x, y) {
						t.Fatalf("module (%d,%d) drawn light=%v, code black=%v", x, y, top, code.Black(x, y))
					}
					if y+1 < code.Size+QuietZone && bottom == code.Black(x, y+1) {
						t.Fatalf("module (%d,%d) drawn light=%v, code black=%v", x, y+1, bottom, code.Black(x, y+1))
					}
				}
			}
			// The top-left finder pattern starts with a row of 7 dark modules
			// over a row of dark, 5 light, dark.
			if !strings.HasPrefix(lines[0], strings.Repeat("█", side)) {
				t.Errorf("first line is not quiet zone: %q", lines[0])
			}
			finder := string([]rune(lines[QuietZone/2])[QuietZone : QuietZone+7])
			if finder != " ▄▄▄▄▄ " {
				t.Errorf("finder pattern top rows = %q, want %q", finder, " ▄▄▄▄▄ ")
			}
		})
	}
}

func TestRenderTooLong(t *testing.T) {
	if _, err := Render(strings.Repeat("x", 5000)); err == nil {
		t.Fatal("Render of 5000 bytes succeeded")
	}
}
