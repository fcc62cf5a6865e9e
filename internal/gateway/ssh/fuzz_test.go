package ssh

import (
	"encoding/binary"
	"slices"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// sftpPacket frames an SFTP packet: type, id and fields.
func sftpPacket(typ byte, id uint32, fields ...any) []byte {
	body := []byte{typ}
	body = binary.BigEndian.AppendUint32(body, id)
	for _, f := range fields {
		switch v := f.(type) {
		case string:
			body = append(body, gossh.Marshal(struct{ S string }{v})...)
		case uint32:
			body = binary.BigEndian.AppendUint32(body, v)
		case uint64:
			body = binary.BigEndian.AppendUint64(body, v)
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// trackerOps runs a tracker over a client and a server stream, fed in
// chunks of size n, client packets first then server ones per step.
func trackerOps(client, server [][]byte, n int) []sftpOp {
	var ops []sftpOp
	t := newSFTPTracker(func(op sftpOp) { ops = append(ops, op) })
	feed := func(f func([]byte), b []byte) {
		for len(b) > 0 {
			k := min(n, len(b))
			f(b[:k])
			b = b[k:]
		}
	}
	for i := range max(len(client), len(server)) {
		if i < len(client) {
			feed(t.fromClient, client[i])
		}
		if i < len(server) {
			feed(t.fromServer, server[i])
		}
	}
	return ops
}

func sftpSession() (client, server [][]byte) {
	data := make([]byte, 40000)
	client = [][]byte{
		append(binary.BigEndian.AppendUint32(nil, 5), 1, 0, 0, 0, 3), // init v3
		sftpPacket(fxpOpen, 1, "/home/u/f.txt", uint32(fxfWrite|fxfCreat|fxfTrunc), uint32(0)),
		nil, // the write, below
		sftpPacket(fxpClose, 3, "H1"),
		sftpPacket(fxpRename, 4, "/home/u/f.txt", "/home/u/g.txt"),
		sftpPacket(fxpRemove, 5, "/home/u/g.txt"),
	}
	w := sftpPacket(fxpWrite, 2, "H1", uint64(0), uint32(len(data)))
	binary.BigEndian.PutUint32(w, uint32(len(w)-4+len(data)))
	client[2] = append(w, data...)
	server = [][]byte{
		sftpPacket(2, 3), // version (its "id" is the version)
		sftpPacket(fxpHandle, 1, "H1"),
		sftpPacket(fxpStatus, 2, uint32(0), "", ""),
		sftpPacket(fxpStatus, 3, uint32(0), "", ""),
	}
	return client, server
}

func TestSFTPTracker(t *testing.T) {
	client, server := sftpSession()
	want := []sftpOp{
		{Op: "open", Path: "/home/u/f.txt", Flags: "wct"},
		{Op: "close", Path: "/home/u/f.txt", Written: 40000},
		{Op: "rename", Path: "/home/u/f.txt", To: "/home/u/g.txt"},
		{Op: "remove", Path: "/home/u/g.txt"},
	}
	for _, n := range []int{1, 3, 7, 4096, 1 << 20} {
		if got := trackerOps(client, server, n); !slices.Equal(got, want) {
			t.Errorf("chunks of %d: %+v\nwant %+v", n, got, want)
		}
	}
}

// FuzzSFTPTracker feeds arbitrary streams (the tracker parses what
// clients and targets send): it must not panic, hold more than
// maxSFTPHead bytes of a packet, or depend on how the stream is split.
func FuzzSFTPTracker(f *testing.F) {
	client, server := sftpSession()
	f.Add(slices.Concat(client...), slices.Concat(server...), uint8(5))
	f.Add([]byte{0, 0, 0, 1, 3}, []byte{0, 0, 0, 0}, uint8(1))
	f.Add(sftpPacket(fxpExtended, 9, "posix-rename@openssh.com", "a", "b"), []byte{}, uint8(2))
	f.Fuzz(func(t *testing.T, c, s []byte, n uint8) {
		whole := trackerOps([][]byte{c}, [][]byte{s}, 1<<30)
		split := trackerOps([][]byte{c}, [][]byte{s}, int(n)+1)
		if !slices.Equal(whole, split) {
			t.Fatalf("split by %d: %+v, whole: %+v", n+1, split, whole)
		}
	})
}

// FuzzParseDestination checks that a parsed destination never holds a
// character that would change the authorized resource.
func FuzzParseDestination(f *testing.F) {
	for _, s := range []string{"web1", "root@web1", "a@b@c", "@", "x/y@z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		target, account, err := parseDestination(s)
		if err != nil {
			return
		}
		if target == "" || slices.ContainsFunc([]byte(target+account), func(b byte) bool { return b == '/' || b == 0 }) {
			t.Fatalf("parseDestination(%q) = %q, %q", s, target, account)
		}
	})
}
