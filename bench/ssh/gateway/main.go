// Command gateway runs Warder's SSH gateway for bench/ssh/run.sh with
// stand-in dependencies (allow-all authorization, one static target, a
// recorder that keeps counts only), and drives load against it.
//
//	gateway serve -listen ADDR -host-key FILE -user-ca FILE.pub -target-addr ADDR -target-host-key FILE.pub -target-user U -target-key FILE [-debug-addr ADDR]
//	gateway load -addr ADDR -key FILE -cert FILE-cert.pub -user TARGET -c 200 -d 60s -cmd true
//	gateway hold|busy ... (interactive sessions for sessions.sh; see sessions.go)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	gw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/identity"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: gateway serve|load|hold|busy [flags]")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "load":
		load(os.Args[2:])
	case "hold":
		hold(os.Args[2:])
	case "busy":
		busy(os.Args[2:])
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func readKey(path string) gossh.Signer {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	s, err := gossh.ParsePrivateKey(b)
	if err != nil {
		log.Fatal(err)
	}
	return s
}

func readPub(path string) gossh.PublicKey {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey(b)
	if err != nil {
		log.Fatal(err)
	}
	return k
}

type allowAll struct{}

func (allowAll) Authorize(context.Context, audit.Origin, authz.Request) (authz.Decision, error) {
	return authz.Decision{Allow: true, Decision: "allow"}, nil
}

func (allowAll) Check(context.Context, authz.Request) (authz.Decision, error) {
	return authz.Decision{Allow: true, Decision: "allow"}, nil
}

type static struct{ up gw.Upstream }

func (s static) DefaultAccount(context.Context, identity.Principal, string) (string, error) {
	return s.up.User, nil
}
func (s static) Resolve(context.Context, identity.Principal, string, string) (gw.Upstream, error) {
	return s.up, nil
}

// countingRecorder keeps byte counts only: the benchmark measures the
// relay, not a recording store.
type countingRecorder struct{ sessions atomic.Int64 }

func (r *countingRecorder) Start(context.Context, audit.Origin, gw.Meta) (gw.Recording, error) {
	r.sessions.Add(1)
	return &counting{ctx: context.Background()}, nil
}

type counting struct {
	ctx    context.Context
	events atomic.Int64
}

func (c *counting) Record(gw.EventType, []byte) error   { c.events.Add(1); return nil }
func (c *counting) AddBytes(in, out int64)              {}
func (c *counting) Context() context.Context            { return c.ctx }
func (c *counting) KillMessage() string                 { return "" }
func (c *counting) Close(context.Context, string) error { return nil }
func (c *counting) ID() string                          { return "bench" }

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:2222", "")
	hostKey := fs.String("host-key", "", "")
	userCA := fs.String("user-ca", "", "")
	targetAddr := fs.String("target-addr", "", "")
	targetHostKey := fs.String("target-host-key", "", "")
	targetUser := fs.String("target-user", "", "")
	targetKey := fs.String("target-key", "", "")
	debugAddr := fs.String("debug-addr", "", "serve /stats (goroutines, fds) here")
	verbose := fs.Bool("v", false, "log connections to stderr")
	fs.Parse(args)
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	srv, err := gw.New(gw.Config{
		Listen:     *listen,
		HostSigner: readKey(*hostKey),
		UserCA:     readPub(*userCA),
		Authz:      allowAll{},
		Upstream: static{gw.Upstream{
			Addr: *targetAddr, HostKey: readPub(*targetHostKey), User: *targetUser,
			Auth: []gossh.AuthMethod{gossh.PublicKeys(readKey(*targetKey))},
		}},
		Recorder: &countingRecorder{},
		Logger:   logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	if *debugAddr != "" {
		http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
			fds, _ := os.ReadDir("/proc/self/fd")
			fmt.Fprintf(w, "goroutines %d fds %d conns %d\n", runtime.NumGoroutine(), len(fds), srv.Conns())
		})
		go http.ListenAndServe(*debugAddr, nil)
	}
	log.Fatal(srv.ListenAndServe())
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:2222", "")
	key := fs.String("key", "", "")
	certFile := fs.String("cert", "", "")
	user := fs.String("user", "", "")
	conc := fs.Int("c", 200, "concurrent connections")
	dur := fs.Duration("d", 60*time.Second, "")
	cmd := fs.String("cmd", "true", "")
	fs.Parse(args)

	cert, ok := readPub(*certFile).(*gossh.Certificate)
	if !ok {
		log.Fatal("not a certificate")
	}
	signer, err := gossh.NewCertSigner(cert, readKey(*key))
	if err != nil {
		log.Fatal(err)
	}
	cfg := &gossh.ClientConfig{
		User: *user, Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
		Config: gossh.Config{Ciphers: []string{gossh.CipherAES128GCM}},
	}
	one := func() error {
		c, err := gossh.Dial("tcp", *addr, cfg)
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			return fmt.Errorf("session: %w", err)
		}
		defer s.Close()
		if err := s.Run(*cmd); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		return nil
	}
	var okN, failN atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr atomic.Value
	end := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := one(); err != nil {
					failN.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				d := time.Since(t0)
				okN.Add(1)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond)
	}
	fmt.Printf("ok %d failed %d rate %.1f/s p50 %s p99 %s", okN.Load(), failN.Load(), float64(okN.Load())/dur.Seconds(), p(0.5), p(0.99))
	if e := firstErr.Load(); e != nil {
		fmt.Printf(" first_error %q", e)
	}
	fmt.Println()
}
