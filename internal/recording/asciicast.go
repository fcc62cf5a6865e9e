package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/errkind"
)

// EventType is the type of an asciicast event. Output, Input, Resize and
// Marker are asciicast v2's; Statement, File and Note are Warder's, which
// players ignore.
type EventType string

// The event types.
const (
	Output    EventType = "o" // bytes the target sent to the terminal
	Input     EventType = "i" // bytes the user typed
	Resize    EventType = "r" // a window change, data "COLSxROWS"
	Marker    EventType = "m" // an asciicast marker (decoded, never recorded)
	Statement EventType = "q" // a SQL statement and its outcome (a JSON object of the gateway's choosing)
	File      EventType = "f" // a file operation (SFTP/SCP)
	Note      EventType = "n" // anything else worth keeping: exec exit status, a blocked command
)

func (t EventType) valid() bool {
	switch t {
	case Output, Input, Resize, Marker, Statement, File, Note:
		return true
	}
	return false
}

// Event is one asciicast v2 event: [time, type, data].
type Event struct {
	Time float64   // seconds since the session started
	Type EventType // what happened
	Data string    // its data
}

// Header is the first line of an asciicast v2 file. Recordings written by
// Warder set Version, Width, Height, Timestamp, Title and, for an exec
// session, Command; the other fields are accepted when decoding.
type Header struct {
	Version       int               `json:"version"`
	Width         int               `json:"width"`
	Height        int               `json:"height"`
	Timestamp     int64             `json:"timestamp,omitempty"` // Unix seconds of the start
	Duration      float64           `json:"duration,omitempty"`
	IdleTimeLimit float64           `json:"idle_time_limit,omitempty"`
	Command       string            `json:"command,omitempty"`
	Title         string            `json:"title,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Theme         json.RawMessage   `json:"theme,omitempty"`
}

// Limits of DecodeAsciicast, which also bound what Replay accepts.
const (
	MaxLineBytes   = 1 << 20  // one header or event line
	MaxDecodeBytes = 64 << 20 // a whole file given to DecodeAsciicast
	MaxEvents      = 1 << 22  // events in a file given to DecodeAsciicast
	// maxEventData bounds the data of one recorded event; Record splits
	// longer data into several events, so a line (at most 6 bytes per
	// byte of data when escaped) stays under MaxLineBytes.
	maxEventData = 32 << 10
)

// encodeHeader returns h as a header line, newline included.
func encodeHeader(h Header) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(h) // cannot fail: plain fields and a map of strings
	return b.Bytes()
}

// appendEvent appends the event line [t, typ, data] and a newline to dst.
// Invalid UTF-8 in data becomes U+FFFD.
func appendEvent(dst []byte, t float64, typ EventType, data []byte) []byte {
	dst = append(dst, '[')
	dst = strconv.AppendFloat(dst, t, 'f', 6, 64)
	dst = append(dst, ", \""...)
	dst = append(dst, typ...) // validated by Record: no characters to escape
	dst = append(dst, "\", "...)
	dst = AppendJSON(dst, data)
	return append(dst, "]\n"...)
}

const hexDigits = "0123456789abcdef"

// AppendJSON appends s as a JSON string; invalid UTF-8 becomes \ufffd. It
// only reads s, so a caller may pass a string's bytes viewed in place. The
// PostgreSQL gateway encodes its statement records with it.
func AppendJSON(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// errFormat wraps the decoder's errors.
func errFormat(line int, format string, args ...any) error {
	return errkind.New(errkind.Invalid, "recording: asciicast line %d: %s", line, fmt.Sprintf(format, args...))
}

// parseHeader decodes and checks a header line (without its newline).
func parseHeader(line []byte) (Header, error) {
	var h Header
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return Header{}, errFormat(1, "bad header: %v", clipErr(err))
	}
	if rest := bytes.TrimSpace(line[dec.InputOffset():]); len(rest) > 0 {
		return Header{}, errFormat(1, "trailing data after the header")
	}
	switch {
	case h.Version != 2:
		return Header{}, errFormat(1, "version %d is not 2", h.Version)
	case h.Width <= 0 || h.Width > maxTerminal || h.Height <= 0 || h.Height > maxTerminal:
		return Header{}, errFormat(1, "terminal size %dx%d out of range", h.Width, h.Height)
	case h.Timestamp < 0 || h.Duration < 0 || h.IdleTimeLimit < 0:
		return Header{}, errFormat(1, "negative timestamp, duration or idle time limit")
	}
	return h, nil
}

// parseEvent decodes and checks an event line (without its newline).
// n is its line number, for errors.
func parseEvent(line []byte, n int) (Event, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return Event{}, errFormat(n, "bad event: %v", clipErr(err))
	}
	if len(raw) != 3 {
		return Event{}, errFormat(n, "an event has 3 elements, not %d", len(raw))
	}
	var ev Event
	if c := raw[0][0]; (c < '0' || c > '9') && c != '-' {
		return Event{}, errFormat(n, "the event time is not a number")
	}
	if err := json.Unmarshal(raw[0], &ev.Time); err != nil || ev.Time < 0 || math.IsInf(ev.Time, 0) {
		return Event{}, errFormat(n, "bad event time")
	}
	var typ string
	if err := json.Unmarshal(raw[1], &typ); err != nil || !EventType(typ).valid() {
		return Event{}, errFormat(n, "bad event type")
	}
	ev.Type = EventType(typ)
	if err := json.Unmarshal(raw[2], &ev.Data); err != nil {
		return Event{}, errFormat(n, "the event data is not a string")
	}
	if ev.Type == Resize {
		if _, _, ok := parseSize(ev.Data); !ok {
			return Event{}, errFormat(n, "bad resize %q", clip(ev.Data, 32))
		}
	}
	return ev, nil
}

// parseSize parses "COLSxROWS".
func parseSize(s string) (w, h int, ok bool) {
	i := bytes.IndexByte([]byte(s), 'x')
	if i <= 0 || i > 5 || len(s)-i-1 <= 0 || len(s)-i-1 > 5 {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(s[:i])
	h, err2 := strconv.Atoi(s[i+1:])
	if err1 != nil || err2 != nil || w <= 0 || h <= 0 || w > maxTerminal || h > maxTerminal ||
		s[0] == '+' || s[i+1] == '+' {
		return 0, 0, false
	}
	return w, h, true
}

// clipErr bounds a decoder error, which may quote input.
func clipErr(err error) string { return clip(err.Error(), 200) }

// decoder reads an asciicast stream line by line.
type decoder struct {
	line    int
	last    float64 // time of the previous event
	started bool    // the header was read
}

// next decodes one line (without its newline). It returns the header for
// line 1 and an event after it.
func (d *decoder) next(line []byte) (h Header, ev Event, isHeader bool, err error) {
	d.line++
	if len(line) > MaxLineBytes {
		return Header{}, Event{}, false, errFormat(d.line, "longer than %d bytes", MaxLineBytes)
	}
	if !d.started {
		d.started = true
		h, err := parseHeader(line)
		return h, Event{}, true, err
	}
	ev, err = parseEvent(line, d.line)
	if err != nil {
		return Header{}, Event{}, false, err
	}
	if ev.Time < d.last {
		return Header{}, Event{}, false, errFormat(d.line, "time %f goes back from %f", ev.Time, d.last)
	}
	d.last = ev.Time
	return Header{}, ev, false, nil
}

// DecodeAsciicast reads an asciicast v2 file strictly: a header line with
// version 2, a terminal size and only the fields asciicast v2 defines, then
// one event per line with a non-negative time that never goes back, a
// known type and string data; no blank lines. It reads at most
// MaxDecodeBytes, lines of at most MaxLineBytes and MaxEvents events.
func DecodeAsciicast(rd io.Reader) (Header, []Event, error) {
	br := bufio.NewReaderSize(io.LimitReader(rd, MaxDecodeBytes+1), 64<<10)
	var (
		d     decoder
		h     Header
		evs   []Event
		total int
		line  []byte
	)
	for {
		var err error
		line, err = readLine(br, line[:0])
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return Header{}, nil, fmt.Errorf("recording: read asciicast: %w", err)
		}
		total += len(line) + 1
		if total > MaxDecodeBytes+1 {
			return Header{}, nil, errkind.New(errkind.TooLarge, "recording: asciicast larger than %d bytes", MaxDecodeBytes)
		}
		hh, ev, isHeader, derr := d.next(line)
		if derr != nil {
			return Header{}, nil, derr
		}
		if isHeader {
			h = hh
		} else {
			if len(evs) == MaxEvents {
				return Header{}, nil, errkind.New(errkind.TooLarge, "recording: asciicast has more than %d events", MaxEvents)
			}
			evs = append(evs, ev)
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if !d.started {
		return Header{}, nil, errkind.New(errkind.Invalid, "recording: empty asciicast")
	}
	return h, evs, nil
}

// readLine appends the next line of br, without its newline, to buf. A
// line longer than MaxLineBytes is returned cut at MaxLineBytes+1 bytes.
// A last line without a newline comes with io.EOF.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > MaxLineBytes+1 {
			frag = frag[:MaxLineBytes+1-len(buf)]
			return append(buf, frag...), nil
		}
		buf = append(buf, frag...)
		if err == nil {
			return buf[:len(buf)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
}
