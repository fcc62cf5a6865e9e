package barrier

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"strings"

	"github.com/warderhq/warder/internal/errkind"
)

// KeySize is the size in bytes of every key the barrier holds: the unseal
// key, the root key and each data key.
const KeySize = 32

// SetID names one initialization of a barrier. It is random per Init,
// stored beside the root key and written into every share and key file, so
// that a share or key file of another server or an earlier initialization is
// recognised and named as such. It is not secret.
type SetID [8]byte

// String returns the set id in lowercase hex, as it appears in key files.
func (s SetID) String() string { return hex.EncodeToString(s[:]) }

// Share is one decoded unseal share.
type Share struct {
	SetID SetID
	// X is the share's x coordinate, 1..255. It is 0 only for the single
	// share of a barrier initialized with one share, whose Y is the unseal
	// key itself.
	X byte
	// Y is the share's value: KeySize bytes.
	Y []byte
}

// A share is encoded as SharePrefix followed by the unpadded lowercase
// base32 (RFC 4648 alphabet, a-z and 2-7) of
//
//	set id (8 bytes) | x (1 byte) | y (32 bytes) | checksum (4 bytes)
//
// where the checksum is the first 4 bytes of SHA-256 over a domain label,
// the set id, x and y. The 45 bytes encode to exactly 72 characters, so the
// encoding has no padding and no spare bits: every valid share has one
// spelling. The alphabet survives copy and paste, double-click selection
// and reading aloud.
const (
	SharePrefix   = "wsh1-"
	shareBytes    = 8 + 1 + KeySize + 4
	shareChars    = shareBytes * 8 / 5
	shareSumLabel = "warder.barrier.share.v1\x00"
)

var shareEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// EncodeShare returns the text form of s. It fails only if len(s.Y) is not KeySize.
func EncodeShare(s Share) (string, error) {
	if len(s.Y) != KeySize {
		return "", errkind.New(errkind.Invalid, "barrier: share value is %d bytes, want %d", len(s.Y), KeySize)
	}
	raw := make([]byte, 0, shareBytes)
	raw = append(raw, s.SetID[:]...)
	raw = append(raw, s.X)
	raw = append(raw, s.Y...)
	raw = append(raw, shareChecksum(s)...)
	out := SharePrefix + shareEncoding.EncodeToString(raw)
	clear(raw)
	return out, nil
}

// DecodeShare parses a share made by EncodeShare, ignoring surrounding
// white space. Every error is of kind errkind.Invalid, says what is wrong
// (a checksum mismatch most often means a typo) and never repeats the
// share's content. It checks the share's form only: whether it belongs to a
// given barrier is for Unseal to say.
func DecodeShare(text string) (Share, error) {
	text = strings.TrimSpace(text)
	body, ok := strings.CutPrefix(text, SharePrefix)
	if !ok {
		return Share{}, errkind.New(errkind.Invalid, "barrier: not an unseal share: it does not start with %q", SharePrefix)
	}
	if len(body) != shareChars {
		return Share{}, errkind.New(errkind.Invalid,
			"barrier: share has %d characters after %q, want %d: part of it is missing or extra", len(body), SharePrefix, shareChars)
	}
	for i := 0; i < len(body); i++ {
		// Checked here because the base32 decoder skips newlines.
		if c := body[i]; !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return Share{}, errkind.New(errkind.Invalid,
				"barrier: share has a character outside a-z and 2-7 at position %d", len(SharePrefix)+i+1)
		}
	}
	raw, err := shareEncoding.DecodeString(body)
	if err != nil || len(raw) != shareBytes {
		return Share{}, errkind.New(errkind.Invalid, "barrier: share is not valid base32")
	}
	defer clear(raw)
	var s Share
	copy(s.SetID[:], raw[:8])
	s.X = raw[8]
	s.Y = append([]byte(nil), raw[9:9+KeySize]...)
	if subtle.ConstantTimeCompare(shareChecksum(s), raw[9+KeySize:]) != 1 {
		clear(s.Y)
		return Share{}, errkind.New(errkind.Invalid, "barrier: share checksum does not match: it was mistyped or damaged")
	}
	return s, nil
}

func shareChecksum(s Share) []byte {
	h := sha256.New()
	h.Write([]byte(shareSumLabel))
	h.Write(s.SetID[:])
	h.Write([]byte{s.X})
	h.Write(s.Y)
	return h.Sum(nil)[:4]
}

// KeyFile is a decoded unseal key file: the whole unseal key, which unseals
// the barrier on its own.
type KeyFile struct {
	SetID SetID
	Key   []byte // KeySize bytes
}

// A key file is four lines of text:
//
//	warder-unseal-key v1
//	set-id: <16 lowercase hex digits>
//	key: <64 lowercase hex digits>
//	checksum: <8 lowercase hex digits>
//
// The checksum is the first 4 bytes of SHA-256 over a domain label, the set
// id and the key.
const (
	keyFileHeader   = "warder-unseal-key v1"
	keyFileSumLabel = "warder.barrier.keyfile.v1\x00"
	maxKeyFileSize  = 1024
)

// EncodeKeyFile returns the text of a key file holding k, ending in a
// newline. It fails only if len(k.Key) is not KeySize.
func EncodeKeyFile(k KeyFile) ([]byte, error) {
	if len(k.Key) != KeySize {
		return nil, errkind.New(errkind.Invalid, "barrier: unseal key is %d bytes, want %d", len(k.Key), KeySize)
	}
	var b strings.Builder
	b.WriteString(keyFileHeader + "\n")
	b.WriteString("set-id: " + k.SetID.String() + "\n")
	b.WriteString("key: " + hex.EncodeToString(k.Key) + "\n")
	b.WriteString("checksum: " + hex.EncodeToString(keyFileChecksum(k)) + "\n")
	return []byte(b.String()), nil
}

// DecodeKeyFile parses a key file made by EncodeKeyFile. Trailing white
// space at the end of the file is ignored; nothing else may differ. Every
// error is of kind errkind.Invalid and never repeats the key.
func DecodeKeyFile(data []byte) (KeyFile, error) {
	if len(data) > maxKeyFileSize {
		return KeyFile{}, errkind.New(errkind.Invalid, "barrier: key file is %d bytes, too large to be an unseal key file", len(data))
	}
	text := strings.TrimRight(string(data), " \t\r\n")
	if strings.Contains(text, "\r") {
		return KeyFile{}, errkind.New(errkind.Invalid, "barrier: key file has Windows line endings (CRLF); convert them to LF")
	}
	lines := strings.Split(text, "\n")
	if len(lines) == 0 || lines[0] != keyFileHeader {
		return KeyFile{}, errkind.New(errkind.Invalid, "barrier: not an unseal key file: the first line is not %q", keyFileHeader)
	}
	if len(lines) != 4 {
		return KeyFile{}, errkind.New(errkind.Invalid, "barrier: key file has %d lines, want 4", len(lines))
	}
	var k KeyFile
	setID, err := keyFileField(lines[1], "set-id", len(k.SetID))
	if err != nil {
		return KeyFile{}, err
	}
	copy(k.SetID[:], setID)
	if k.Key, err = keyFileField(lines[2], "key", KeySize); err != nil {
		return KeyFile{}, err
	}
	sum, err := keyFileField(lines[3], "checksum", 4)
	if err != nil {
		clear(k.Key)
		return KeyFile{}, err
	}
	if subtle.ConstantTimeCompare(sum, keyFileChecksum(k)) != 1 {
		clear(k.Key)
		return KeyFile{}, errkind.New(errkind.Invalid, "barrier: key file checksum does not match: the file is damaged")
	}
	return k, nil
}

// keyFileField parses the line "name: <hex of n bytes>".
func keyFileField(line, name string, n int) ([]byte, error) {
	v, ok := strings.CutPrefix(line, name+": ")
	if !ok {
		return nil, errkind.New(errkind.Invalid, "barrier: key file line %q is missing or out of place", name)
	}
	if len(v) != 2*n {
		return nil, errkind.New(errkind.Invalid, "barrier: key file %s has %d characters, want %d", name, len(v), 2*n)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return nil, errkind.New(errkind.Invalid, "barrier: key file %s is not lowercase hex", name)
		}
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "barrier: key file %s is not lowercase hex", name)
	}
	return b, nil
}

func keyFileChecksum(k KeyFile) []byte {
	h := sha256.New()
	h.Write([]byte(keyFileSumLabel))
	h.Write(k.SetID[:])
	h.Write(k.Key)
	return h.Sum(nil)[:4]
}

// appendField appends b to dst preceded by its length as 4 bytes big-endian.
func appendField(dst []byte, b string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}
