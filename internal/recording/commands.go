package recording

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Marks put in front of a reconstructed line whose text is not fully known
// from the keystrokes.
const (
	// HistoryMark: the line was recalled from the shell's history (Up,
	// Down, Ctrl-P, Ctrl-N, Ctrl-R), whose content the keystrokes do not
	// show; the text is what was typed after the recall.
	HistoryMark = "(history) "
	// CompletionMark: Tab was pressed; what the shell completed is not in
	// the keystrokes.
	CompletionMark = "(completion) "
)

// Bounds of the line editor.
const (
	MaxCommandRunes = 4096   // a line is cut at this many characters
	MaxCommands     = 100000 // Commands returns at most this many lines
	maxEscape       = 16     // parameter bytes kept of one escape sequence
)

// LineBuffer reconstructs command lines from the keystrokes of an
// interactive session, as an Emacs-mode readline (bash's default) would
// edit them: printable characters (UTF-8) are inserted at the cursor;
// Backspace and DEL delete before it, Ctrl-D and Delete (ESC [3~) at it;
// Ctrl-U kills to the start of the line, Ctrl-K to its end, Ctrl-W the
// blank-separated word before the cursor, Alt-Backspace the alphanumeric
// word; Ctrl-Y yanks what was last killed; Left/Right (ESC [D, ESC [C, and
// ESC O D/C), Ctrl-B/Ctrl-F, Ctrl-Left/Right and Alt-B/Alt-F move the
// cursor; Home/End (ESC [H/F, ESC [1~/4~, Ctrl-A/Ctrl-E) jump; Ctrl-C
// abandons the line; Enter (CR, LF, or CR LF) completes it.
//
// Its limits, which make it a record for people and a guard rail, never
// proof of what ran: history recall and Tab completion insert text that
// is not in the keystrokes (such lines are marked with HistoryMark or
// CompletionMark); keystrokes sent to full-screen programs (vi, top, a
// pager) or typed at prompts, including passwords read with echo off,
// look like command lines too; vi editing mode, multi-line constructs and
// the shell's own key bindings are not modelled; bracketed-paste markers
// are ignored and pasted text counts as typed.
//
// The zero LineBuffer is ready to use. It is not safe for concurrent use.
type LineBuffer struct {
	line       []rune
	cur        int
	kill       []rune // the last killed text, for Ctrl-Y
	history    bool
	completion bool
	utf        []byte // an incomplete UTF-8 character
	esc        escState
	params     []byte // parameter bytes of the escape sequence being read
	lastCR     bool   // the previous byte was CR: a LF right after it is part of the same Enter
}

type escState uint8

const (
	escNone escState = iota
	escStart
	escCSI
	escSS3
)

// Feed processes keystrokes and returns the lines they complete, in
// order. Empty and blank lines are left out.
func (b *LineBuffer) Feed(data []byte) []string {
	var out []string
	for _, c := range data {
		cr := b.lastCR
		b.lastCR = false
		if b.esc != escNone {
			b.escape(c)
			continue
		}
		if len(b.utf) > 0 {
			if c >= 0x80 && !utf8.RuneStart(c) && len(b.utf) < utf8.UTFMax {
				b.utf = append(b.utf, c)
				if utf8.FullRune(b.utf) {
					r, _ := utf8.DecodeRune(b.utf)
					b.utf = b.utf[:0]
					b.insert(r)
				}
				continue
			}
			b.utf = b.utf[:0]
			b.insert(utf8.RuneError)
		}
		switch {
		case c >= 0x80:
			if utf8.RuneStart(c) && c >= 0xC2 && c <= 0xF4 {
				b.utf = append(b.utf, c)
			} else {
				b.insert(utf8.RuneError)
			}
		case c == '\r':
			b.lastCR = true
			out = b.emit(out)
		case c == '\n':
			if !cr {
				out = b.emit(out)
			}
		case c >= 0x20 && c < 0x7f:
			b.insert(rune(c))
		default:
			b.control(c)
		}
	}
	return out
}

// control handles a C0 control character or DEL.
func (b *LineBuffer) control(c byte) {
	switch c {
	case 0x1b:
		b.esc, b.params = escStart, b.params[:0]
	case 0x7f, 0x08: // Backspace
		if b.cur > 0 {
			b.line = slices.Delete(b.line, b.cur-1, b.cur)
			b.cur--
		}
	case 0x04: // Ctrl-D: delete at the cursor (EOF on an empty line)
		b.deleteForward()
	case 0x15: // Ctrl-U
		b.killRange(0, b.cur)
	case 0x0b: // Ctrl-K
		b.killRange(b.cur, len(b.line))
	case 0x17: // Ctrl-W: the blank-separated word before the cursor
		i := b.cur
		for i > 0 && unicode.IsSpace(b.line[i-1]) {
			i--
		}
		for i > 0 && !unicode.IsSpace(b.line[i-1]) {
			i--
		}
		b.killRange(i, b.cur)
	case 0x19: // Ctrl-Y
		for _, r := range b.kill {
			b.insert(r)
		}
	case 0x01: // Ctrl-A
		b.cur = 0
	case 0x05: // Ctrl-E
		b.cur = len(b.line)
	case 0x02: // Ctrl-B
		b.left()
	case 0x06: // Ctrl-F
		b.right()
	case 0x03: // Ctrl-C: the line is abandoned
		b.reset()
	case 0x10, 0x0e, 0x12: // Ctrl-P, Ctrl-N, Ctrl-R
		b.recall()
	case 0x09: // Tab
		b.completion = true
	}
}

// escape handles a byte of an escape sequence.
func (b *LineBuffer) escape(c byte) {
	switch b.esc {
	case escStart:
		b.esc = escNone
		switch c {
		case '[':
			b.esc = escCSI
		case 'O':
			b.esc = escSS3
		case 'b', 'B':
			b.cur = b.wordLeft()
		case 'f', 'F':
			b.cur = b.wordRight()
		case 'd', 'D':
			b.killRange(b.cur, b.wordRight())
		case 0x7f, 0x08:
			b.killRange(b.wordLeft(), b.cur)
		case 0x1b:
			b.esc = escStart
		}
	case escSS3:
		b.esc = escNone
		b.cursorKey(c, nil)
	case escCSI:
		switch {
		case c >= 0x20 && c <= 0x3f: // parameter and intermediate bytes
			if len(b.params) < maxEscape {
				b.params = append(b.params, c)
			}
		case c >= 0x40 && c <= 0x7e:
			b.esc = escNone
			b.cursorKey(c, b.params)
		default: // not a valid sequence: drop it
			b.esc = escNone
		}
	}
}

// cursorKey handles the final byte of a CSI or SS3 sequence.
func (b *LineBuffer) cursorKey(final byte, params []byte) {
	p := string(params)
	word := strings.HasSuffix(p, ";5") || strings.HasSuffix(p, ";3") // Ctrl- or Alt-arrow
	switch final {
	case 'A', 'B':
		b.recall()
	case 'C':
		if word {
			b.cur = b.wordRight()
		} else {
			b.right()
		}
	case 'D':
		if word {
			b.cur = b.wordLeft()
		} else {
			b.left()
		}
	case 'H':
		b.cur = 0
	case 'F':
		b.cur = len(b.line)
	case '~':
		switch p {
		case "1", "7":
			b.cur = 0
		case "4", "8":
			b.cur = len(b.line)
		case "3":
			b.deleteForward()
		}
	}
}

func (b *LineBuffer) insert(r rune) {
	if len(b.line) >= MaxCommandRunes {
		return
	}
	b.line = slices.Insert(b.line, b.cur, r)
	b.cur++
}

func (b *LineBuffer) left() {
	if b.cur > 0 {
		b.cur--
	}
}

func (b *LineBuffer) right() {
	if b.cur < len(b.line) {
		b.cur++
	}
}

func (b *LineBuffer) deleteForward() {
	if b.cur < len(b.line) {
		b.line = slices.Delete(b.line, b.cur, b.cur+1)
	}
}

// killRange removes line[i:j], keeping it for Ctrl-Y, and leaves the
// cursor at i.
func (b *LineBuffer) killRange(i, j int) {
	if i >= j {
		return
	}
	b.kill = append(b.kill[:0], b.line[i:j]...)
	b.line = slices.Delete(b.line, i, j)
	b.cur = i
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// wordLeft returns the start of the alphanumeric word before the cursor.
func (b *LineBuffer) wordLeft() int {
	i := b.cur
	for i > 0 && !isWordRune(b.line[i-1]) {
		i--
	}
	for i > 0 && isWordRune(b.line[i-1]) {
		i--
	}
	return i
}

// wordRight returns the end of the alphanumeric word after the cursor.
func (b *LineBuffer) wordRight() int {
	i := b.cur
	for i < len(b.line) && !isWordRune(b.line[i]) {
		i++
	}
	for i < len(b.line) && isWordRune(b.line[i]) {
		i++
	}
	return i
}

// recall stands for a history recall: the shell replaces the line with
// one the keystrokes do not show.
func (b *LineBuffer) recall() {
	b.line, b.cur, b.history = b.line[:0], 0, true
}

func (b *LineBuffer) reset() {
	b.line, b.cur, b.history, b.completion = b.line[:0], 0, false, false
}

// emit appends the current line, marked, to out unless it is blank, and
// starts a new one.
func (b *LineBuffer) emit(out []string) []string {
	if len(b.utf) > 0 {
		b.utf = b.utf[:0]
		b.insert(utf8.RuneError)
	}
	text := string(b.line)
	if b.completion {
		text = CompletionMark + text
	}
	if b.history {
		text = HistoryMark + text
	}
	if strings.TrimSpace(text) != "" {
		out = append(out, text)
	}
	b.reset()
	return out
}

// Commands reconstructs the command lines typed in a recording from its
// Input events, with a LineBuffer (see its limits). It returns at most
// MaxCommands lines of at most MaxCommandRunes characters (plus a mark).
func Commands(events []Event) []string {
	var b LineBuffer
	out := []string{}
	for _, ev := range events {
		if ev.Type != Input {
			continue
		}
		out = append(out, b.Feed([]byte(ev.Data))...)
		if len(out) >= MaxCommands {
			return out[:MaxCommands]
		}
	}
	return out
}
