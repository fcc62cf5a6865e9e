package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// eventTag and checkpointTag separate the two signed/hashed encodings.
const (
	eventTag      = "warder.audit.event.v1\x00"
	checkpointTag = "warder.audit.checkpoint.v1\x00"
)

// Canonical returns the encoding of ev that is hashed into the chain. It
// covers every field but PrevHash and Hash (the prev hash is prepended by the
// chain itself). The encoding is length-prefixed binary, so no two distinct
// events share one:
//
//	"warder.audit.event.v1" 0x00
//	u64(Seq)                       8 bytes, big-endian, two's complement
//	u64(store.Micros(Time))        8 bytes, big-endian, two's complement
//	str(Actor) str(Action) str(Resource) str(Outcome) str(Source) str(RequestID)
//	u32(len(Details))              4 bytes, big-endian
//	str(key) str(value)            for each detail, keys in ascending byte order
//
// where str(s) is u32(len(s)) followed by the bytes of s. Time enters at
// microsecond precision; a nil and an empty Details encode alike.
func Canonical(ev Event) []byte {
	n := len(eventTag) + 8 + 8 + 4 + 6*4 + len(ev.Actor) + len(ev.Action) + len(ev.Resource) +
		len(ev.Outcome) + len(ev.Source) + len(ev.RequestID)
	keys := make([]string, 0, len(ev.Details))
	for k, v := range ev.Details {
		keys = append(keys, k)
		n += 8 + len(k) + len(v)
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	b = append(b, eventTag...)
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(store.Micros(ev.Time)))
	for _, s := range []string{ev.Actor, ev.Action, ev.Resource, ev.Outcome, ev.Source, ev.RequestID} {
		b = appendStr(b, s)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendStr(appendStr(b, k), ev.Details[k])
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// chainHash returns hex SHA-256(prev || Canonical(ev)); prev is raw bytes.
func chainHash(prev []byte, ev Event) string {
	h := sha256.New()
	h.Write(prev)
	h.Write(Canonical(ev))
	return hex.EncodeToString(h.Sum(nil))
}

// CheckpointMessage returns the bytes a checkpoint's signature covers:
//
//	"warder.audit.checkpoint.v1" 0x00 || u64(seq) || 32 hash bytes || u64(store.Micros(t))
//
// with integers big-endian. hash is the hex Hash of the event at seq; a
// malformed hash yields an error.
func CheckpointMessage(seq int64, hash string, t time.Time) ([]byte, error) {
	raw, err := decodeHash(hash)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(checkpointTag)+8+32+8)
	b = append(b, checkpointTag...)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	b = append(b, raw...)
	b = binary.BigEndian.AppendUint64(b, uint64(store.Micros(t)))
	return b, nil
}

// decodeHash parses a 64-character lowercase hex SHA-256.
func decodeHash(s string) ([]byte, error) {
	if len(s) != 64 {
		return nil, errkind.New(errkind.Invalid, "audit: hash has %d characters, want 64", len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, errkind.New(errkind.Invalid, "audit: hash is not lowercase hex")
		}
	}
	return hex.DecodeString(s)
}

// MaxLineBytes bounds one exported JSON line accepted by DecodeEvent. An
// event within the field limits, even with every byte escaped, fits.
const MaxLineBytes = 512 << 10

// DecodeEvent parses one line of Export output strictly: one JSON object
// with exactly the Event field names (case-sensitive, each at most once,
// unknown ones refused), no trailing data, fields within the limits Append
// enforces, seq >= 1, time at microsecond precision, hashes 64 lowercase hex
// characters. It does not check Hash against the content; VerifyStream does.
// Errors are errkind.Invalid.
func DecodeEvent(line []byte) (Event, error) {
	var ev Event
	line = bytes.TrimRight(line, "\r\n")
	if len(line) > MaxLineBytes {
		return ev, errkind.New(errkind.Invalid, "audit: line is %d bytes, more than %d", len(line), MaxLineBytes)
	}
	fields, err := strictObject(line)
	if err != nil {
		return ev, errkind.New(errkind.Invalid, "audit: decode event: %w", err)
	}
	for _, name := range []string{"seq", "time", "actor", "action", "outcome", "prev_hash", "hash"} {
		if _, ok := fields[name]; !ok {
			return ev, errkind.New(errkind.Invalid, "audit: decode event: missing %q", name)
		}
	}
	for name, raw := range fields {
		if string(raw) == "null" {
			return Event{}, errkind.New(errkind.Invalid, "audit: decode event: %s is null", clip(name))
		}
		var err error
		switch name {
		case "seq":
			err = json.Unmarshal(raw, &ev.Seq)
		case "time":
			err = json.Unmarshal(raw, &ev.Time)
		case "actor":
			err = json.Unmarshal(raw, &ev.Actor)
		case "action":
			err = json.Unmarshal(raw, &ev.Action)
		case "resource":
			err = json.Unmarshal(raw, &ev.Resource)
		case "outcome":
			err = json.Unmarshal(raw, &ev.Outcome)
		case "source":
			err = json.Unmarshal(raw, &ev.Source)
		case "request_id":
			err = json.Unmarshal(raw, &ev.RequestID)
		case "prev_hash":
			err = json.Unmarshal(raw, &ev.PrevHash)
		case "hash":
			err = json.Unmarshal(raw, &ev.Hash)
		case "details":
			ev.Details, err = strictDetails(raw)
		default:
			err = fmt.Errorf("unknown field %q", clip(name))
		}
		if err != nil {
			return Event{}, errkind.New(errkind.Invalid, "audit: decode event: %s: %w", clip(name), err)
		}
	}
	if ev.Seq < 1 {
		return Event{}, errkind.New(errkind.Invalid, "audit: decode event: seq %d < 1", ev.Seq)
	}
	if ev.Time.Nanosecond()%1000 != 0 {
		return Event{}, errkind.New(errkind.Invalid, "audit: decode event: time is finer than a microsecond")
	}
	if _, err := decodeHash(ev.PrevHash); err != nil {
		return Event{}, fmt.Errorf("audit: decode event: prev_hash: %w", err)
	}
	if _, err := decodeHash(ev.Hash); err != nil {
		return Event{}, fmt.Errorf("audit: decode event: hash: %w", err)
	}
	out, err := validate(ev)
	if err != nil {
		return Event{}, fmt.Errorf("audit: decode event: %w", err)
	}
	out.Time = store.FromMicros(store.Micros(ev.Time))
	return out, nil
}

// strictObject splits a JSON object into its members, refusing duplicate
// names, trailing data and anything but an object.
func strictObject(data []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	out := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("object key is not a string")
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("duplicate field %q", clip(name))
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		out[name] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return nil, fmt.Errorf("trailing data after the object")
	}
	return out, nil
}

// strictDetails decodes the details object: string values only, no
// duplicate keys.
func strictDetails(raw json.RawMessage) (map[string]string, error) {
	members, err := strictObject(raw)
	if err != nil {
		return nil, err
	}
	d := make(map[string]string, len(members))
	for k, v := range members {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, err
		}
		d[k] = s
	}
	return d, nil
}
