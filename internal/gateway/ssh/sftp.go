package ssh

import (
	"encoding/binary"
	"sync"
)

// SFTP (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks) packet
// types the tracker reads.
const (
	fxpOpen     = 3
	fxpClose    = 4
	fxpRead     = 5
	fxpWrite    = 6
	fxpSetstat  = 9
	fxpRemove   = 13
	fxpMkdir    = 14
	fxpRmdir    = 15
	fxpRename   = 18
	fxpSymlink  = 20
	fxpStatus   = 101
	fxpHandle   = 102
	fxpData     = 103
	fxpExtended = 200
)

// SFTP open flags.
const (
	fxfRead   = 0x01
	fxfWrite  = 0x02
	fxfAppend = 0x04
	fxfCreat  = 0x08
	fxfTrunc  = 0x10
)

// sftpOp is a recorded file operation.
type sftpOp struct {
	Op      string `json:"op"` // open, close, remove, rename, mkdir, rmdir, setstat, symlink
	Path    string `json:"path"`
	To      string `json:"to,omitempty"`    // rename, symlink: the new path
	Flags   string `json:"flags,omitempty"` // open: "r", "w", "rw", plus "a", "c", "t"
	Read    int64  `json:"read,omitempty"`  // close: bytes read through the handle
	Written int64  `json:"written,omitempty"`
}

// maxSFTPHead is how much of each packet the tracker looks at: enough for
// two paths of PATH_MAX; the data of longer packets (writes) is only
// counted.
const maxSFTPHead = 9 << 10

// sftpStream splits one direction of an SFTP byte stream into packets
// without holding more than maxSFTPHead bytes of any. It is fed by one
// goroutine.
type sftpStream struct {
	lenBuf [4]byte
	lenN   int    // bytes of lenBuf filled
	need   int    // bytes of the current packet still to come; 0: reading a length
	total  int    // the current packet's length
	head   []byte // its first bytes, up to maxSFTPHead
	broken bool   // the stream is not SFTP: stop parsing
	packet func(head []byte, total int)
}

func (s *sftpStream) feed(data []byte) {
	for len(data) > 0 && !s.broken {
		if s.need == 0 {
			k := copy(s.lenBuf[s.lenN:], data)
			s.lenN += k
			data = data[k:]
			if s.lenN < 4 {
				return
			}
			s.lenN = 0
			s.total = int(binary.BigEndian.Uint32(s.lenBuf[:]))
			if s.total == 0 || s.total > 1<<24 {
				s.broken = true
				return
			}
			s.need = s.total
			s.head = s.head[:0]
			continue
		}
		k := min(s.need, len(data))
		if room := maxSFTPHead - len(s.head); room > 0 {
			s.head = append(s.head, data[:min(k, room)]...)
		}
		s.need -= k
		data = data[k:]
		if s.need == 0 {
			s.packet(s.head, s.total)
		}
	}
}

// sftpReader reads SFTP wire fields from a packet's head.
type sftpReader struct {
	b  []byte
	ok bool
}

func (r *sftpReader) byte() byte {
	if !r.ok || len(r.b) < 1 {
		r.ok = false
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *sftpReader) uint32() uint32 {
	if !r.ok || len(r.b) < 4 {
		r.ok = false
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *sftpReader) string() string {
	n := r.uint32()
	if !r.ok || uint32(len(r.b)) < n {
		r.ok = false
		return ""
	}
	v := string(r.b[:n])
	r.b = r.b[n:]
	return v
}

// sftpTracker follows an SFTP session in both directions and reports file
// operations: requests that change or open files as they are sent, and a
// close with the bytes read and written through the handle.
type sftpTracker struct {
	emit           func(sftpOp)
	client, server sftpStream
	mu             sync.Mutex        // protects the following
	opens          map[uint32]sftpOp // open requests by id, until answered
	reads          map[uint32]string // read requests by id: their handle
	handles        map[string]*sftpOp
}

// maxSFTPTracked bounds the requests and handles remembered; beyond it
// the tracker stops counting bytes (operations are still reported).
const maxSFTPTracked = 4096

func newSFTPTracker(emit func(sftpOp)) *sftpTracker {
	t := &sftpTracker{emit: emit, opens: map[uint32]sftpOp{}, reads: map[uint32]string{}, handles: map[string]*sftpOp{}}
	t.client.packet = t.clientPacket
	t.server.packet = t.serverPacket
	return t
}

func (t *sftpTracker) fromClient(data []byte) { t.client.feed(data) }
func (t *sftpTracker) fromServer(data []byte) { t.server.feed(data) }

func (t *sftpTracker) clientPacket(head []byte, total int) {
	r := &sftpReader{b: head, ok: true}
	typ := r.byte()
	if typ < fxpOpen { // init, version: no id
		return
	}
	id := r.uint32()
	var op sftpOp
	switch typ {
	case fxpOpen:
		op = sftpOp{Op: "open", Path: r.string(), Flags: openFlags(r.uint32())}
		if !r.ok {
			return
		}
		t.mu.Lock()
		if len(t.opens) < maxSFTPTracked {
			t.opens[id] = op
		}
		t.mu.Unlock()
	case fxpClose:
		h := r.string()
		t.mu.Lock()
		o, found := t.handles[h]
		delete(t.handles, h)
		t.mu.Unlock()
		if found {
			t.emit(sftpOp{Op: "close", Path: o.Path, Read: o.Read, Written: o.Written})
		}
		return
	case fxpRead:
		h := r.string()
		if !r.ok {
			return
		}
		t.mu.Lock()
		if _, found := t.handles[h]; found && len(t.reads) < maxSFTPTracked {
			t.reads[id] = h
		}
		t.mu.Unlock()
		return
	case fxpWrite:
		h := r.string()
		r.uint32() // offset, two words
		r.uint32()
		n := r.uint32()
		if !r.ok {
			return
		}
		t.mu.Lock()
		if o, found := t.handles[h]; found {
			o.Written += int64(n)
		}
		t.mu.Unlock()
		return
	case fxpRemove, fxpMkdir, fxpRmdir, fxpSetstat:
		op = sftpOp{Op: map[byte]string{fxpRemove: "remove", fxpMkdir: "mkdir", fxpRmdir: "rmdir", fxpSetstat: "setstat"}[typ], Path: r.string()}
	case fxpRename:
		op = sftpOp{Op: "rename", Path: r.string(), To: r.string()}
	case fxpSymlink:
		// OpenSSH sends (target, link) in reverse of the draft: keep
		// the wire order, named as OpenSSH uses it.
		op = sftpOp{Op: "symlink", To: r.string(), Path: r.string()}
	case fxpExtended:
		switch r.string() {
		case "posix-rename@openssh.com":
			op = sftpOp{Op: "rename", Path: r.string(), To: r.string()}
		case "hardlink@openssh.com":
			op = sftpOp{Op: "hardlink", Path: r.string(), To: r.string()}
		default:
			return
		}
	default:
		return
	}
	if r.ok {
		t.emit(op)
	}
}

func (t *sftpTracker) serverPacket(head []byte, total int) {
	r := &sftpReader{b: head, ok: true}
	typ := r.byte()
	id := r.uint32()
	if !r.ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch typ {
	case fxpHandle:
		op, found := t.opens[id]
		delete(t.opens, id)
		h := r.string()
		if found && r.ok && len(t.handles) < maxSFTPTracked {
			t.handles[h] = &op
		}
	case fxpData:
		h, found := t.reads[id]
		delete(t.reads, id)
		if o := t.handles[h]; found && o != nil {
			o.Read += int64(total - 9) // type, id, data length
		}
	case fxpStatus:
		delete(t.opens, id)
		delete(t.reads, id)
	}
}

func openFlags(f uint32) string {
	var s string
	switch {
	case f&fxfRead != 0 && f&fxfWrite != 0:
		s = "rw"
	case f&fxfWrite != 0:
		s = "w"
	default:
		s = "r"
	}
	if f&fxfAppend != 0 {
		s += "a"
	}
	if f&fxfCreat != 0 {
		s += "c"
	}
	if f&fxfTrunc != 0 {
		s += "t"
	}
	return s
}
