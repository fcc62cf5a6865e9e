package barrier

import (
	"bytes"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/errkind"
)

// fixedShare is a share with fixed content, so tests are deterministic.
func fixedShare() Share {
	s := Share{SetID: SetID{1, 2, 3, 4, 5, 6, 7, 8}, X: 3, Y: make([]byte, KeySize)}
	for i := range s.Y {
		s.Y[i] = byte(i * 7)
	}
	return s
}

func equalShares(a, b Share) bool {
	return a.SetID == b.SetID && a.X == b.X && bytes.Equal(a.Y, b.Y)
}

func TestShareRoundTrip(t *testing.T) {
	for _, x := range []byte{0, 1, 3, 255} {
		s := fixedShare()
		s.X = x
		text, err := EncodeShare(s)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(text, SharePrefix) || len(text) != len(SharePrefix)+shareChars {
			t.Fatalf("EncodeShare = %q: wrong shape", text)
		}
		for _, in := range []string{text, "  " + text + "\n", "\t" + text + "\r\n"} {
			got, err := DecodeShare(in)
			if err != nil {
				t.Fatalf("DecodeShare(%q): %v", in, err)
			}
			if !equalShares(got, s) {
				t.Fatalf("DecodeShare(EncodeShare(s)) = %+v, want %+v", got, s)
			}
		}
	}
}

func TestEncodeShareRejectsWrongLength(t *testing.T) {
	s := fixedShare()
	s.Y = s.Y[:31]
	if _, err := EncodeShare(s); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("EncodeShare of a 31-byte share: err = %v, want Invalid", err)
	}
}

func TestDecodeShareErrors(t *testing.T) {
	good, _ := EncodeShare(fixedShare())
	body := good[len(SharePrefix):]
	tests := []struct {
		name, text, want string
	}{
		{"empty", "", "does not start with"},
		{"wrong prefix", "wsh2-" + body, "does not start with"},
		{"truncated", good[:len(good)-1], "characters after"},
		{"extra", good + "a", "characters after"},
		{"upper case", SharePrefix + strings.ToUpper(body), "outside a-z and 2-7"},
		{"inner newline", SharePrefix + body[:10] + "\n" + body[11:], "outside a-z and 2-7"},
		{"digit 8", SharePrefix + "8" + body[1:], "outside a-z and 2-7"},
		{"swapped", SharePrefix + body[1:2] + body[0:1] + body[2:], "checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.text == good {
				t.Fatal("test case is the good share")
			}
			_, err := DecodeShare(tt.text)
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeShare: err = %v, want Invalid containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), body[5:20]) {
				t.Fatalf("error repeats the share: %v", err)
			}
		})
	}
}

// TestDecodeShareCatchesEveryTypo changes each character of a share to
// every other character of the alphabet: each change must be refused.
func TestDecodeShareCatchesEveryTypo(t *testing.T) {
	good, _ := EncodeShare(fixedShare())
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	for i := len(SharePrefix); i < len(good); i++ {
		for _, c := range []byte(alphabet) {
			if c == good[i] {
				continue
			}
			bad := good[:i] + string(c) + good[i+1:]
			if _, err := DecodeShare(bad); !errkind.Is(err, errkind.Invalid) {
				t.Fatalf("share with character %d changed to %q was accepted", i, c)
			}
		}
	}
}

func fixedKeyFile() KeyFile {
	k := KeyFile{SetID: SetID{8, 7, 6, 5, 4, 3, 2, 1}, Key: make([]byte, KeySize)}
	for i := range k.Key {
		k.Key[i] = byte(255 - i)
	}
	return k
}

func TestKeyFileRoundTrip(t *testing.T) {
	k := fixedKeyFile()
	data, err := EncodeKeyFile(k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte(keyFileHeader+"\n")) || !bytes.HasSuffix(data, []byte("\n")) {
		t.Fatalf("EncodeKeyFile = %q: wrong shape", data)
	}
	for _, in := range [][]byte{data, bytes.TrimSuffix(data, []byte("\n")), append(bytes.Clone(data), "\n\n  "...)} {
		got, err := DecodeKeyFile(in)
		if err != nil {
			t.Fatalf("DecodeKeyFile(%q): %v", in, err)
		}
		if got.SetID != k.SetID || !bytes.Equal(got.Key, k.Key) {
			t.Fatalf("DecodeKeyFile(EncodeKeyFile(k)) = %+v, want %+v", got, k)
		}
	}
}

func TestDecodeKeyFileErrors(t *testing.T) {
	good, _ := EncodeKeyFile(fixedKeyFile())
	lines := strings.Split(strings.TrimSuffix(string(good), "\n"), "\n")
	keyHex := strings.TrimPrefix(lines[2], "key: ")
	flip := func(s string, i int) string {
		c := byte('0')
		if s[i] == '0' {
			c = '1'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	join := func(l ...string) string { return strings.Join(l, "\n") + "\n" }
	tests := []struct {
		name, text, want string
	}{
		{"empty", "", "first line"},
		{"a share", "wsh1-abc", "first line"},
		{"wrong header", join("warder-unseal-key v2", lines[1], lines[2], lines[3]), "first line"},
		{"missing line", join(lines[0], lines[1], lines[2]), "has 3 lines"},
		{"extra line", join(lines[0], lines[1], lines[2], lines[3], "x"), "has 5 lines"},
		{"lines swapped", join(lines[0], lines[2], lines[1], lines[3]), "set-id"},
		{"CRLF", strings.ReplaceAll(string(good), "\n", "\r\n"), "line endings"},
		{"key changed", join(lines[0], lines[1], flip(lines[2], 10), lines[3]), "checksum"},
		{"set id changed", join(lines[0], flip(lines[1], 9), lines[2], lines[3]), "checksum"},
		{"checksum changed", join(lines[0], lines[1], lines[2], flip(lines[3], 12)), "checksum"},
		{"key short", join(lines[0], lines[1], lines[2][:len(lines[2])-2], lines[3]), "characters"},
		{"key upper case", join(lines[0], lines[1], strings.ToUpper(lines[2][:5])+lines[2][5:], lines[3]), `"key"`},
		{"key not hex", join(lines[0], lines[1], "key: "+strings.Repeat("g", 64), lines[3]), "not lowercase hex"},
		{"too large", string(good) + strings.Repeat(" ", 2000), "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeKeyFile([]byte(tt.text))
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeKeyFile: err = %v, want Invalid containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), keyHex[:16]) {
				t.Fatalf("error repeats the key: %v", err)
			}
		})
	}
}

func FuzzDecodeShare(f *testing.F) {
	s := fixedShare()
	good, _ := EncodeShare(s)
	f.Add(good, s.SetID[:], s.X, s.Y)
	f.Add(" "+good+"\n", []byte("12345678"), byte(0), bytes.Repeat([]byte{0xff}, KeySize))
	f.Add(SharePrefix, []byte{}, byte(1), []byte{1})
	f.Add(good[:40], []byte{}, byte(200), make([]byte, KeySize))
	f.Fuzz(func(t *testing.T, text string, setID []byte, x byte, y []byte) {
		// Anything accepted re-encodes to the same text.
		if got, err := DecodeShare(text); err == nil {
			again, err := EncodeShare(got)
			if err != nil {
				t.Fatalf("EncodeShare of a decoded share: %v", err)
			}
			if again != strings.TrimSpace(text) {
				t.Fatalf("DecodeShare(%q) re-encodes to %q", text, again)
			}
		} else if !errkind.Is(err, errkind.Invalid) {
			t.Fatalf("DecodeShare error of kind %v: %v", errkind.Of(err), err)
		}
		// decode(encode(x)) == x.
		sh := Share{X: x, Y: y}
		copy(sh.SetID[:], setID)
		enc, err := EncodeShare(sh)
		if len(y) != KeySize {
			if err == nil {
				t.Fatalf("EncodeShare accepted a %d-byte value", len(y))
			}
			return
		}
		if err != nil {
			t.Fatalf("EncodeShare: %v", err)
		}
		got, err := DecodeShare(enc)
		if err != nil || !equalShares(got, sh) {
			t.Fatalf("DecodeShare(EncodeShare(%+v)) = %+v, %v", sh, got, err)
		}
	})
}

func FuzzDecodeKeyFile(f *testing.F) {
	k := fixedKeyFile()
	good, _ := EncodeKeyFile(k)
	f.Add(good, k.SetID[:], k.Key)
	f.Add(bytes.TrimSpace(good), []byte{}, make([]byte, KeySize))
	f.Add([]byte(keyFileHeader+"\nset-id: \nkey: \nchecksum: \n"), []byte{1}, []byte{1})
	f.Add([]byte(strings.ReplaceAll(string(good), "\n", "\r\n")), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, data, setID, key []byte) {
		if got, err := DecodeKeyFile(data); err == nil {
			again, err := EncodeKeyFile(got)
			if err != nil {
				t.Fatalf("EncodeKeyFile of a decoded key file: %v", err)
			}
			want := strings.TrimRight(string(data), " \t\r\n") + "\n"
			if string(again) != want {
				t.Fatalf("DecodeKeyFile(%q) re-encodes to %q", data, again)
			}
		} else if !errkind.Is(err, errkind.Invalid) {
			t.Fatalf("DecodeKeyFile error of kind %v: %v", errkind.Of(err), err)
		}
		kf := KeyFile{Key: key}
		copy(kf.SetID[:], setID)
		enc, err := EncodeKeyFile(kf)
		if len(key) != KeySize {
			if err == nil {
				t.Fatalf("EncodeKeyFile accepted a %d-byte key", len(key))
			}
			return
		}
		if err != nil {
			t.Fatalf("EncodeKeyFile: %v", err)
		}
		got, err := DecodeKeyFile(enc)
		if err != nil || got.SetID != kf.SetID || !bytes.Equal(got.Key, kf.Key) {
			t.Fatalf("DecodeKeyFile(EncodeKeyFile(%+v)) = %+v, %v", kf, got, err)
		}
	})
}
