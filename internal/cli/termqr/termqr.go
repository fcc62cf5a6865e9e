// Package termqr draws QR codes in a terminal with Unicode half blocks, two
// modules to a character row, so that a phone can scan them off the screen.
//
// The drawing assumes light text on a dark background, as most terminals
// use: a block is a light module and a space a dark one (the colours
// `qrencode -t UTF8` uses). Scanners also read the inverse.
package termqr

import (
	"fmt"
	"strings"

	"rsc.io/qr"
)

// QuietZone is the number of light modules drawn around the code, as the
// QR specification asks.
const QuietZone = 4

// Render encodes text at error-correction level M and returns the drawing:
// one line per two module rows, each ending in "\n", made only of the
// runes '█', '▀', '▄' and ' '. For a code of n modules a side it has
// n+2*QuietZone columns and (n+2*QuietZone+1)/2 lines.
func Render(text string) (string, error) {
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		return "", fmt.Errorf("termqr: %w", err)
	}
	return draw(code.Size, code.Black), nil
}

// draw renders a size×size grid whose dark modules black reports; black
// is false outside the grid, which makes the quiet zone.
func draw(size int, black func(x, y int) bool) string {
	light := func(x, y int) bool { return !black(x, y) }
	var b strings.Builder
	lo, hi := -QuietZone, size+QuietZone
	for y := lo; y < hi; y += 2 {
		for x := lo; x < hi; x++ {
			top := light(x, y)
			bottom := y+1 >= hi || light(x, y+1) // below the drawing is quiet zone too
			switch {
			case top && bottom:
				b.WriteRune('█')
			case top:
				b.WriteRune('▀')
			case bottom:
				b.WriteRune('▄')
			default:
				b.WriteByte(' ')
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
