package postgres

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/warderhq/warder/internal/audit"
)

// pipeConn is a net.Conn that reads from r and discards writes.
type pipeConn struct {
	r io.Reader
	net.Conn
}

func (c *pipeConn) Read(p []byte) (int, error)                    { return c.r.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error)                   { return len(p), nil }
func (c *pipeConn) Close() error                                  { return nil }
func (c *pipeConn) SetDeadline(time.Time) error                   { return nil }
func (c *pipeConn) SetReadDeadline(time.Time) error               { return nil }
func (c *pipeConn) SetWriteDeadline(time.Time) error              { return nil }
func (c *pipeConn) RemoteAddr() net.Addr                          { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *pipeConn) LocalAddr() net.Addr                           { return c.RemoteAddr() }
func encode(m interface{ Encode([]byte) ([]byte, error) }) []byte { b, _ := m.Encode(nil); return b }

// clientSeeds are message streams like those pgx and psql send.
func clientSeeds() [][]byte {
	cat := func(ms ...[]byte) []byte { return bytes.Join(ms, nil) }
	return [][]byte{
		encode(&pgproto3.Query{String: "select 1; drop table x"}),
		cat(encode(&pgproto3.Parse{Name: "s1", Query: "select $1::int"}), encode(&pgproto3.Describe{ObjectType: 'S', Name: "s1"}), encode(&pgproto3.Sync{}),
			encode(&pgproto3.Bind{PreparedStatement: "s1", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 1}}}),
			encode(&pgproto3.Execute{}), encode(&pgproto3.Sync{}), encode(&pgproto3.Close{ObjectType: 'S', Name: "s1"})),
		cat(encode(&pgproto3.Query{String: "copy t from stdin"}), encode(&pgproto3.CopyData{Data: []byte("1\n")}), encode(&pgproto3.CopyDone{}), encode(&pgproto3.Terminate{})),
		cat(encode(&pgproto3.Parse{Query: "DROP /* */ TABLE t"}), encode(&pgproto3.Bind{Parameters: [][]byte{nil, []byte("x")}}), encode(&pgproto3.Execute{}), encode(&pgproto3.Sync{})),
	}
}

// FuzzClientMessages feeds arbitrary bytes to the client side of a relay
// (framing, statement tracking, rules) and, as if the server sent them, to
// the server side. Nothing may panic; a malformed stream ends that relay
// with an error.
func FuzzClientMessages(f *testing.F) {
	for _, s := range clientSeeds() {
		f.Add(s)
	}
	srv, err := New(Config{AllowPlaintext: true, Auth: tokens{}, Authz: &policy{}, Upstream: &static{}, Recorder: &memRecorder{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sess, _ := (&memRecorder{}).Start(context.Background(), audit.Origin{}, Meta{})
		l := &login{target: "t", sess: sess}
		r := &relay{s: srv, client: &pipeConn{r: bytes.NewReader(data)}, up: &pipeConn{r: bytes.NewReader(data)}, l: l,
			log: slog.New(slog.DiscardHandler), rules: fuzzRules, now: time.Now,
			stmts: map[string]string{}, recorded: map[string]bool{}, portals: map[string]*portal{}}
		r.fromClient()
		r.fromServer()
	})
}

// FuzzStartup feeds arbitrary bytes to the startup phase.
func FuzzStartup(f *testing.F) {
	f.Add(encode(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "a@t", "database": "d"}}))
	f.Add(append(encode(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "t", "_pq_.x": "1"}}),
		encode(&pgproto3.PasswordMessage{Password: "wt1.x"})...))
	f.Add(encode(&pgproto3.SSLRequest{}))
	f.Add(encode(&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}))
	srv, err := New(Config{AllowPlaintext: true, Auth: tokens{}, Authz: &policy{}, Upstream: &static{}, Recorder: &memRecorder{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &pipeConn{r: bytes.NewReader(data)}
		ctx := context.Background()
		conn, sm, err := srv.negotiate(ctx, c)
		if err == nil && sm != nil {
			srv.authenticate(ctx, conn, sm, &login{})
		}
	})
}

// fuzzRules are the rules the fuzzed relays apply.
var fuzzRules = []Rule{{Pattern: regexp.MustCompile(`(?i)drop table`), Action: ActionBlock, Message: "not here"}}
