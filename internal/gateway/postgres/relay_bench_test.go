//go:build linux

package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/testenv"
)

// BenchmarkRelay runs select-only queries like pgbench -S (simple
// protocol, one statement per round trip) from 8 connections through a
// gateway (TLS to the client, every statement encoded for the recording)
// that runs in a child process, with the event loop and with goroutines,
// and direct to PostgreSQL for reference. gw-cpu-us/op is the gateway
// process's CPU time per query: on shared cores it says more than ns/op.
//
//	go test ./internal/gateway/postgres -run '^$' -bench Relay -benchtime 40000x -count 3
func BenchmarkRelay(b *testing.B) {
	c := testenv.PostgresSCRAM(b)
	password := "Bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	role := c.CreateRole(b, password, "")
	for _, mode := range []string{"direct", "loop", "goroutines"} {
		b.Run(mode, func(b *testing.B) {
			var cfg *pgx.ConnConfig
			pid := 0
			if mode == "direct" {
				var err error
				cfg, err = pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=postgres sslmode=disable", c.Host, c.Port))
				if err != nil {
					b.Fatal(err)
				}
				cfg.User, cfg.Password = role, password
			} else {
				cfg, pid = startBenchGateway(b, c, role, password, mode)
			}
			benchQueries(b, cfg, 8, pid)
		})
	}
}

// startBenchGateway starts TestBenchGatewayProcess in a child process and
// returns a client configuration for it and its pid.
func startBenchGateway(b *testing.B, c *testenv.SCRAMCluster, role, password, mode string) (*pgx.ConnConfig, int) {
	srvTLS, cliTLS := testTLS(b)
	dir := b.TempDir()
	cert := srvTLS.Certificates[0]
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		b.Fatal(err)
	}
	pemFile := filepath.Join(dir, "gateway.pem")
	err = os.WriteFile(pemFile, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})...), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchGatewayProcess$")
	cmd.Env = append(os.Environ(), "WARDER_BENCH_GATEWAY="+strings.Join([]string{
		mode, pemFile, c.Host, strconv.Itoa(c.Port), role, password}, "\n"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child stops
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		b.Fatalf("gateway process: %q, %v", line, err)
	}
	go io.Copy(io.Discard, stdout)
	cfg, err := pgx.ParseConfig("host=127.0.0.1 dbname=postgres sslmode=require")
	if err != nil {
		b.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	cfg.Port = uint16(p)
	cfg.User, cfg.Password, cfg.TLSConfig, cfg.Fallbacks = role+"@pg", aliceToken, cliTLS, nil
	return cfg, cmd.Process.Pid
}

// TestBenchGatewayProcess is BenchmarkRelay's gateway when run as its
// child process (WARDER_BENCH_GATEWAY set); it serves until its standard
// input closes.
func TestBenchGatewayProcess(t *testing.T) {
	env := os.Getenv("WARDER_BENCH_GATEWAY")
	if env == "" {
		t.Skip("the gateway process of BenchmarkRelay")
	}
	f := strings.Split(env, "\n")
	mode, pemFile, host, role, password := f[0], f[1], f[2], f[4], f[5]
	port, _ := strconv.Atoi(f[3])
	cert, err := tls.LoadX509KeyPair(pemFile, pemFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Auth:     tokens{aliceToken: {ID: "a", Principal: identity.Principal{Kind: identity.KindUser, Name: "alice"}}},
		Authz:    &policy{allow: map[string]bool{"alice": true}},
		Upstream: &static{host: host, port: port, user: role, password: password},
		Recorder: benchRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	srv.loops.off.Store(mode == "goroutines")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	fmt.Printf("listening %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Close(ctx)
}

// benchQueries runs b.N queries over conns connections and reports the
// CPU time per query of process pid (if not 0).
func benchQueries(b *testing.B, cfg *pgx.ConnConfig, conns, pid int) {
	ctx := context.Background()
	cs := make([]*pgx.Conn, conns)
	for i := range cs {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		cs[i] = conn
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	errc := make(chan error, conns)
	cpu0 := processCPU(b, pid)
	b.ResetTimer()
	for i, conn := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var v int
			for n := int64(i); left.Add(-1) >= 0; n++ {
				if err := conn.QueryRow(ctx, "select $1::int", pgx.QueryExecModeSimpleProtocol, n%100000).Scan(&v); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if pid != 0 {
		b.ReportMetric(float64((processCPU(b, pid)-cpu0).Microseconds())/float64(b.N), "gw-cpu-us/op")
	}
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
}

// processCPU returns the user and system CPU time of process pid (0: none).
func processCPU(b *testing.B, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks
}

// benchRecorder encodes each statement as internal/recording does and
// keeps nothing.
type benchRecorder struct{}

func (benchRecorder) Start(context.Context, audit.Origin, Meta) (Session, error) {
	return &benchSession{ctx: context.Background(), start: time.Now()}, nil
}

type benchSession struct {
	ctx   context.Context
	start time.Time
	mu    sync.Mutex
	buf   []byte
}

func (*benchSession) ID() string { return "bench" }
func (s *benchSession) Record(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf[:0], '[')
	s.buf = strconv.AppendFloat(s.buf, time.Since(s.start).Seconds(), 'f', 6, 64)
	s.buf = append(s.buf, `, "q", `...)
	s.buf = appendJSONBytes(s.buf, data)
	s.buf = append(s.buf, "]\n"...)
	return nil
}
func (*benchSession) AddBytes(int64, int64)               {}
func (s *benchSession) Context() context.Context          { return s.ctx }
func (*benchSession) KillMessage() string                 { return "" }
func (*benchSession) SetDeadline(time.Time)               {}
func (*benchSession) Close(context.Context, string) error { return nil }
