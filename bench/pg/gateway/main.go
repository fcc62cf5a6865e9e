// Command gateway runs the PostgreSQL gateway for bench/pg/run.sh: one
// static upstream, one accepted token, every connection allowed, and an
// in-memory recorder that encodes and buffers every statement (as the
// real recorder does before its background writer stores a chunk) and
// then drops the buffer. It is a benchmark harness, not a server.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	pggw "github.com/warderhq/warder/internal/gateway/postgres"
	"github.com/warderhq/warder/internal/identity"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:6543", "address to listen on")
	host := flag.String("upstream-host", "127.0.0.1", "PostgreSQL host")
	port := flag.Int("upstream-port", 5432, "PostgreSQL port")
	user := flag.String("upstream-user", "bench", "PostgreSQL role")
	token := flag.String("token", "bench-token", "the password clients send")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	password := os.Getenv("UPSTREAM_PASSWORD")
	if password == "" {
		log.Fatal("set UPSTREAM_PASSWORD")
	}
	cert, err := selfSigned()
	if err != nil {
		log.Fatal(err)
	}
	rec := &recorder{}
	srv, err := pggw.New(pggw.Config{
		TLS:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Auth:     oneToken{token: *token},
		Authz:    allowAll{},
		Upstream: staticUpstream{host: *host, port: *port, user: *user, password: password},
		Recorder: rec,
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	}()
	fmt.Fprintf(os.Stderr, "gateway: listening on %s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, pggw.ErrServerClosed) {
		log.Print(err)
	}
	fmt.Fprintf(os.Stderr, "gateway: %d sessions, %d statements recorded, %d bytes of records\n",
		rec.sessions.Load(), rec.statements.Load(), rec.bytes.Load())
}

type oneToken struct{ token string }

func (o oneToken) Authenticate(_ context.Context, presented string) (identity.Token, error) {
	if presented != o.token {
		return identity.Token{}, identity.ErrBadToken
	}
	return identity.Token{ID: "bench", Principal: identity.Principal{Kind: identity.KindUser, Name: "bench"}}, nil
}

type allowAll struct{}

func (allowAll) Authorize(context.Context, audit.Origin, authz.Request) (authz.Decision, error) {
	return authz.Decision{Allow: true, Decision: "allow", Policies: []string{"bench"}}, nil
}

type staticUpstream struct {
	host, user, password string
	port                 int
}

func (s staticUpstream) Resolve(context.Context, identity.Principal, string, string, identity.Token) (pggw.Upstream, error) {
	return pggw.Upstream{Host: s.host, Port: s.port, User: s.user, Password: []byte(s.password)}, nil
}

// recorder buffers each session's statements as asciicast lines, encoded
// as internal/recording's Session.Record encodes them (appendEvent: the
// time, the type, the statement's JSON as a JSON string), and drops each
// 64 KiB chunk when full instead of encrypting and storing it.
type recorder struct {
	sessions, statements, bytes atomic.Int64
}

func (r *recorder) Start(context.Context, audit.Origin, pggw.Meta) (pggw.Session, error) {
	n := r.sessions.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	return &session{r: r, id: fmt.Sprintf("bench%d", n), ctx: ctx, cancel: cancel, start: time.Now()}, nil
}

type session struct {
	r      *recorder
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	start  time.Time
	in     atomic.Int64
	out    atomic.Int64

	mu    sync.Mutex
	chunk []byte
}

func (s *session) ID() string { return s.id }
func (s *session) Record(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chunk == nil {
		s.chunk = make([]byte, 0, 64<<10)
	}
	s.chunk = append(s.chunk, '[')
	s.chunk = strconv.AppendFloat(s.chunk, time.Since(s.start).Seconds(), 'f', 6, 64)
	s.chunk = append(s.chunk, `, "q", `...)
	s.chunk = appendJSONString(s.chunk, data)
	s.chunk = append(s.chunk, "]\n"...)
	s.r.statements.Add(1)
	s.r.bytes.Add(int64(len(data)))
	if len(s.chunk) >= 64<<10 {
		s.chunk = s.chunk[:0]
	}
	return nil
}

// appendJSONString appends s as a JSON string (s is valid UTF-8: the
// gateway's records are).
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i, c := range s {
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
func (s *session) AddBytes(in, out int64)              { s.in.Add(in); s.out.Add(out) }
func (s *session) Context() context.Context            { return s.ctx }
func (s *session) KillMessage() string                 { return "" }
func (s *session) SetDeadline(time.Time)               {}
func (s *session) Close(context.Context, string) error { s.cancel(); return nil }

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "warder bench gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
