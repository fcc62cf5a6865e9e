package postgres

import (
	"encoding/binary"
	"strconv"
	"time"
	"unsafe"

	"github.com/warderhq/warder/internal/recording"
)

// appendStart begins a statement's record: {"sql":…[,"stmt":…].
func appendStart(dst, sql []byte, stmt string) []byte {
	dst = append(dst, `{"sql":`...)
	dst = appendJSONBytes(dst, sql)
	if stmt != "" {
		dst = append(dst, `,"stmt":`...)
		dst = appendJSONString(dst, stmt)
	}
	return dst
}

// appendParams appends the parameters of a Bind message as a JSON array;
// b is the message body after the portal and statement names. Text
// parameters are strings, binary ones "\\x" and hex, NULL null; redact
// replaces each non-NULL value by "<redacted>". ok is false if b is
// malformed.
func appendParams(dst, b []byte, redact bool) (_ []byte, ok bool) {
	if len(b) < 2 {
		return dst, false
	}
	nf := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < 2*nf+2 {
		return dst, false
	}
	formats := b[:2*nf]
	b = b[2*nf:]
	np := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if nf > 1 && nf != np {
		return dst, false
	}
	dst = append(dst, '[')
	for i := range np {
		if len(b) < 4 {
			return dst, false
		}
		n := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if i > 0 {
			dst = append(dst, ',')
		}
		if n < 0 {
			dst = append(dst, "null"...)
			continue
		}
		if n > len(b) {
			return dst, false
		}
		v := b[:n]
		b = b[n:]
		binaryFormat := false
		switch nf {
		case 0:
		case 1:
			binaryFormat = formats[1] == 1
		default:
			binaryFormat = formats[2*i+1] == 1
		}
		switch {
		case redact:
			dst = append(dst, `"<redacted>"`...)
		case binaryFormat:
			dst = append(dst, `"\\x`...)
			for _, c := range v {
				dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
			}
			dst = append(dst, '"')
		default:
			dst = appendJSONBytes(dst, v)
		}
	}
	return append(dst, ']'), true
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string (recording.AppendJSON).
func appendJSONString(dst []byte, s string) []byte {
	return recording.AppendJSON(dst, unsafe.Slice(unsafe.StringData(s), len(s)))
}

// appendJSONBytes is appendJSONString for a byte slice.
func appendJSONBytes(dst, b []byte) []byte { return recording.AppendJSON(dst, b) }

// normalizeSQL appends sql with comments removed (outside string
// literals and quoted identifiers) and runs of white space collapsed to
// one space, for rule matching.
func normalizeSQL(dst, sql []byte) []byte {
	space := false
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			space = true
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth := 0 // PostgreSQL's block comments nest
			for ; i+1 < len(sql); i++ {
				if sql[i] == '/' && sql[i+1] == '*' {
					depth++
					i++
				} else if sql[i] == '*' && sql[i+1] == '/' {
					depth--
					i++
					if depth == 0 {
						break
					}
				}
			}
			space = true
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			space = true
			continue
		}
		if space && len(dst) > 0 {
			dst = append(dst, ' ')
		}
		space = false
		if c == '\'' || c == '"' {
			j := i + 1
			for j < len(sql) && sql[j] != c {
				j++
			}
			if j < len(sql) {
				j++
			}
			dst = append(dst, sql[i:j]...)
			i = j - 1
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// appendMillis appends d in milliseconds with three decimals, as
// strconv.AppendFloat(dst, float64(d.Microseconds())/1000, 'f', 3, 64)
// does, without floating point.
func appendMillis(dst []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		dst = append(dst, '-')
		us = -us
	}
	dst = strconv.AppendInt(dst, us/1000, 10)
	frac := us % 1000
	return append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}
