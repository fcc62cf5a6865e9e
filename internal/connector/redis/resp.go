package redis

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Limits on what readReply accepts, so a hostile or broken server cannot
// make the connector allocate without bound. The replies it expects (OK,
// errors, ACL GETUSER) are a few hundred bytes.
const (
	maxLine   = 4096    // a simple string, error or length line, with CRLF
	maxBulk   = 1 << 20 // one bulk string
	maxElems  = 4096    // elements in all arrays of one reply
	maxDepth  = 8       // array nesting
	readerBuf = maxLine // bufio.Reader size: ReadSlice fails on longer lines
)

// reply is one RESP2 reply.
type reply struct {
	typ   byte   // '+' simple string, '-' error, ':' integer, '$' bulk string, '*' array
	str   []byte // '+', '-', '$'
	num   int64  // ':'
	null  bool   // "$-1" or "*-1"
	elems []reply
}

// errProtocol marks a reply that is not valid RESP2 within the limits.
var errProtocol = errors.New("redis: protocol error")

// readReply reads one RESP2 reply from r, which must have been made with
// bufio.NewReaderSize(_, readerBuf) or smaller.
func readReply(r *bufio.Reader) (reply, error) {
	budget := maxElems
	return readValue(r, 0, &budget)
}

func readValue(r *bufio.Reader, depth int, budget *int) (reply, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return reply{}, fmt.Errorf("%w: line longer than %d bytes", errProtocol, maxLine)
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return reply{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return reply{}, fmt.Errorf("%w: line not terminated by CRLF", errProtocol)
	}
	typ, body := line[0], line[1:len(line)-2]
	switch typ {
	case '+', '-':
		return reply{typ: typ, str: append([]byte(nil), body...)}, nil
	case ':':
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			return reply{}, fmt.Errorf("%w: bad integer", errProtocol)
		}
		return reply{typ: typ, num: n}, nil
	case '$':
		n, err := parseLen(body, maxBulk)
		if err != nil {
			return reply{}, err
		}
		if n < 0 {
			return reply{typ: typ, null: true}, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return reply{}, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return reply{}, fmt.Errorf("%w: bulk string not terminated by CRLF", errProtocol)
		}
		return reply{typ: typ, str: buf[:n:n]}, nil
	case '*':
		if depth >= maxDepth {
			return reply{}, fmt.Errorf("%w: arrays nested deeper than %d", errProtocol, maxDepth)
		}
		n, err := parseLen(body, maxElems)
		if err != nil {
			return reply{}, err
		}
		if n < 0 {
			return reply{typ: typ, null: true}, nil
		}
		if *budget -= n; *budget < 0 {
			return reply{}, fmt.Errorf("%w: more than %d array elements", errProtocol, maxElems)
		}
		rep := reply{typ: typ, elems: make([]reply, 0, n)}
		for range n {
			e, err := readValue(r, depth+1, budget)
			if err != nil {
				return reply{}, err
			}
			rep.elems = append(rep.elems, e)
		}
		return rep, nil
	default:
		return reply{}, fmt.Errorf("%w: unsupported reply type %q", errProtocol, typ)
	}
}

// parseLen parses a bulk or array length: -1 (null) or 0..max.
func parseLen(b []byte, max int) (int, error) {
	n, err := strconv.Atoi(string(b))
	if err != nil || n < -1 {
		return 0, fmt.Errorf("%w: bad length", errProtocol)
	}
	if n > max {
		return 0, fmt.Errorf("%w: length %d over the limit %d", errProtocol, n, max)
	}
	return n, nil
}

// appendCommand appends args as a RESP array of bulk strings.
func appendCommand(buf []byte, args ...[]byte) []byte {
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(len(args)), 10)
	buf = append(buf, '\r', '\n')
	for _, a := range args {
		buf = append(buf, '$')
		buf = strconv.AppendInt(buf, int64(len(a)), 10)
		buf = append(buf, '\r', '\n')
		buf = append(buf, a...)
		buf = append(buf, '\r', '\n')
	}
	return buf
}

// client is one connection to a Redis server, used by one goroutine.
type client struct {
	nc   net.Conn
	r    *bufio.Reader
	stop func() bool // detaches the context watcher
}

// dial connects to addr within timeout. The whole conversation is bounded
// by the earlier of ctx's deadline and now+timeout, and ends at once when
// ctx is cancelled.
func dial(ctx context.Context, addr string, timeout time.Duration, tlsConfig *tls.Config) (*client, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	d := net.Dialer{Deadline: deadline}
	var nc net.Conn
	var err error
	if tlsConfig != nil {
		td := tls.Dialer{NetDialer: &d, Config: tlsConfig}
		nc, err = td.DialContext(ctx, "tcp", addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	return &client{nc: nc, r: bufio.NewReaderSize(nc, readerBuf), stop: stop}, nil
}

// do sends one command and reads its reply. A Redis error reply is
// returned as a reply of type '-', not as an error.
func (c *client) do(args ...[]byte) (reply, error) {
	if _, err := c.nc.Write(appendCommand(nil, args...)); err != nil {
		return reply{}, err
	}
	return readReply(c.r)
}

func (c *client) close() {
	c.stop()
	c.nc.Close()
}
