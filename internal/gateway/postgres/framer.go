package postgres

import (
	"encoding/binary"
	"errors"
	"io"
)

// errTooLarge is returned by a framer for a message over its limit.
var errTooLarge = errors.New("message too large")

// errBadLength is returned by a framer for a length field under 4.
var errBadLength = errors.New("invalid message length")

// A framer splits a stream of typed protocol messages (type byte, int32
// length including itself, body). Messages whose type the owner wants
// whole are returned whole; the others are streamed in pieces as they
// arrive, so a large DataRow or CopyData is never buffered entirely.
type framer struct {
	rd   io.Reader
	buf  []byte
	r, w int // the unread bytes are buf[r:w]
	rest int // bytes of a streamed message still to come
	need int // bytes from r the next step needs
	max  int // largest message read whole, header included
}

func newFramer(rd io.Reader, size, max int) *framer {
	return &framer{rd: rd, buf: make([]byte, size), need: 1, max: max}
}

// fill reads at least one more byte, first making room: the message
// being read (f.need bytes) is moved to the start of the buffer, which
// grows while that message fills it.
func (f *framer) fill() error {
	if f.r == f.w {
		f.r, f.w = 0, 0
	}
	if f.need > len(f.buf)-f.r || f.w == len(f.buf) {
		f.w = copy(f.buf, f.buf[f.r:f.w])
		f.r = 0
		if f.need > len(f.buf) && f.w == len(f.buf) {
			// Grow by doubling as the message arrives, never to more than
			// it needs: a length field alone allocates nothing.
			nb := make([]byte, min(f.need, 2*len(f.buf)))
			copy(nb, f.buf[:f.w])
			f.buf = nb
		}
	}
	n, err := f.rd.Read(f.buf[f.w:])
	f.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// A piece of the stream, as next returns it.
type piece struct {
	typ   byte
	data  []byte // the bytes to forward: a whole message, or part of a streamed one
	whole bool   // data is one whole message, header included
	start bool   // data begins a streamed message (typ is valid)
}

// next returns the next piece available in the buffer, or ok false when
// more must be read (fill). wantWhole says which types are read whole.
func (f *framer) next(wantWhole func(byte) bool) (p piece, ok bool, err error) {
	avail := f.w - f.r
	if f.rest > 0 {
		if avail == 0 {
			f.need = 1
			return p, false, nil
		}
		k := min(f.rest, avail)
		p.data = f.buf[f.r : f.r+k]
		f.r += k
		f.rest -= k
		return p, true, nil
	}
	if avail < 5 {
		f.need = 5
		return p, false, nil
	}
	typ := f.buf[f.r]
	n := int(binary.BigEndian.Uint32(f.buf[f.r+1:]))
	if n < 4 {
		return p, false, errBadLength
	}
	p.typ = typ
	if wantWhole(typ) {
		if n+1 > f.max {
			return p, false, errTooLarge
		}
		if avail < n+1 {
			f.need = n + 1
			return p, false, nil
		}
		p.data, p.whole = f.buf[f.r:f.r+n+1], true
		f.r += n + 1
		return p, true, nil
	}
	k := min(n+1, avail)
	p.data, p.start = f.buf[f.r:f.r+k], true
	f.r += k
	f.rest = n + 1 - k
	return p, true, nil
}

// atBoundary reports whether no streamed message is partly read.
func (f *framer) atBoundary() bool { return f.rest == 0 }

// cstring splits a NUL-terminated string off b.
func cstring(b []byte) (s, rest []byte, ok bool) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:], true
		}
	}
	return nil, nil, false
}
