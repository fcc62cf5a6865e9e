package main

// Drivers of interactive sessions for bench/ssh/sessions.sh:
//
//	gateway hold -addr ADDR -user U -key FILE [-cert FILE] [-jump ADDR -jump-user U] -n 500
//	gateway busy -addr ADDR -user U -key FILE [-cert FILE] -d 60s
//
// hold opens n interactive sessions (pty and shell) and keeps them idle:
// it prints "ready N" once every shell has printed its prompt, then waits
// for its standard input to close and closes them. With -jump it reaches
// -addr through an OpenSSH jump host (what `ssh -J` does: a direct-tcpip
// channel, then SSH to the target over it), logging in to both with -key.
//
// busy opens one interactive session and types into it for -d as a
// person would: a command every second or so, a character every 40 ms,
// including directory listings.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// sessionFlags are the flags hold and busy share.
type sessionFlags struct {
	addr, user, key, cert string
	jump, jumpUser        string
}

func (f *sessionFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "", "the gateway, or with -jump the target, host:port")
	fs.StringVar(&f.user, "user", "", "SSH user name (ACCOUNT@TARGET for the gateway)")
	fs.StringVar(&f.key, "key", "", "private key file")
	fs.StringVar(&f.cert, "cert", "", "certificate of -key (the gateway's user certificate)")
	fs.StringVar(&f.jump, "jump", "", "OpenSSH jump host, host:port (ProxyJump)")
	fs.StringVar(&f.jumpUser, "jump-user", "", "user name on the jump host (default -user)")
}

// auth returns the login: the key, with its certificate if given.
func (f *sessionFlags) auth() gossh.AuthMethod {
	signer := readKey(f.key)
	if f.cert != "" {
		cert, ok := readPub(f.cert).(*gossh.Certificate)
		if !ok {
			log.Fatalf("%s is not a certificate", f.cert)
		}
		var err error
		if signer, err = gossh.NewCertSigner(cert, signer); err != nil {
			log.Fatal(err)
		}
	}
	return gossh.PublicKeys(signer)
}

// dial connects to -addr, directly or through -jump. close ends both
// connections.
func (f *sessionFlags) dial(auth gossh.AuthMethod) (c *gossh.Client, close func(), err error) {
	cfg := func(user string) *gossh.ClientConfig {
		return &gossh.ClientConfig{User: user, Auth: []gossh.AuthMethod{auth}, HostKeyCallback: gossh.InsecureIgnoreHostKey(),
			Timeout: 60 * time.Second, Config: gossh.Config{Ciphers: []string{gossh.CipherAES128GCM}}}
	}
	if f.jump == "" {
		c, err := gossh.Dial("tcp", f.addr, cfg(f.user))
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.Close() }, nil
	}
	ju := f.jumpUser
	if ju == "" {
		ju = f.user
	}
	j, err := gossh.Dial("tcp", f.jump, cfg(ju))
	if err != nil {
		return nil, nil, fmt.Errorf("jump host: %w", err)
	}
	nc, err := j.Dial("tcp", f.addr)
	if err != nil {
		j.Close()
		return nil, nil, fmt.Errorf("jump to %s: %w", f.addr, err)
	}
	sc, chans, reqs, err := gossh.NewClientConn(nc, f.addr, cfg(f.user))
	if err != nil {
		j.Close()
		return nil, nil, err
	}
	c = gossh.NewClient(sc, chans, reqs)
	return c, func() { c.Close(); j.Close() }, nil
}

// promptWriter signals once output ends with a shell prompt ("$ " or "# ").
type promptWriter struct {
	once   sync.Once
	ready  chan struct{}
	mu     sync.Mutex
	last   []byte
	copied atomic.Int64
}

func (w *promptWriter) Write(p []byte) (int, error) {
	w.copied.Add(int64(len(p)))
	w.mu.Lock()
	w.last = append(w.last, p...)
	if len(w.last) > 64 {
		w.last = w.last[len(w.last)-64:]
	}
	s := strings.TrimRight(string(w.last), " ")
	w.mu.Unlock()
	if strings.HasSuffix(s, "$") || strings.HasSuffix(s, "#") {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

// shell opens an interactive session with a pty on c.
func shell(c *gossh.Client, out io.Writer) (*gossh.Session, io.WriteCloser, error) {
	s, err := c.NewSession()
	if err != nil {
		return nil, nil, err
	}
	if err := s.RequestPty("xterm", 40, 120, gossh.TerminalModes{gossh.ECHO: 1}); err != nil {
		return nil, nil, err
	}
	s.Stdout, s.Stderr = out, out
	in, err := s.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := s.Shell(); err != nil {
		return nil, nil, err
	}
	return s, in, nil
}

func hold(args []string) {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	var f sessionFlags
	f.register(fs)
	n := fs.Int("n", 500, "sessions")
	conc := fs.Int("c", 20, "sessions opened at once")
	fs.Parse(args)
	auth := f.auth()

	var mu sync.Mutex
	var closers []func()
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for i := range *n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, closeFn, err := f.dial(auth)
			if err != nil {
				failed.Add(1)
				log.Printf("session %d: %v", i, err)
				return
			}
			w := &promptWriter{ready: make(chan struct{})}
			s, in, err := shell(c, w)
			if err != nil {
				closeFn()
				failed.Add(1)
				log.Printf("session %d: %v", i, err)
				return
			}
			io.WriteString(in, "echo $((40+2))\r")
			select {
			case <-w.ready:
			case <-time.After(60 * time.Second):
				log.Printf("session %d: no prompt", i)
			}
			mu.Lock()
			closers = append(closers, func() { s.Close(); closeFn() })
			mu.Unlock()
		})
	}
	wg.Wait()
	fmt.Printf("ready %d failed %d in %s\n", len(closers), failed.Load(), time.Since(start).Round(time.Millisecond))
	io.Copy(io.Discard, os.Stdin) // until the caller closes it
	for _, c := range closers {
		c()
	}
	fmt.Println("closed")
}

// typed is what busy types, in a loop.
var typed = []string{
	"ls -la /usr/bin | head -60",
	"ps aux | head -25",
	"df -h",
	"cat /etc/os-release",
	"ls -la /etc",
	"echo $RANDOM $((RANDOM * 7))",
	"uptime",
	"ls -l --color=always /usr/lib | tail -40",
	"grep -c '' /etc/services",
	"date",
}

func busy(args []string) {
	fs := flag.NewFlagSet("busy", flag.ExitOnError)
	var f sessionFlags
	f.register(fs)
	d := fs.Duration("d", time.Minute, "how long to type")
	perChar := fs.Duration("char", 40*time.Millisecond, "time between typed characters")
	pause := fs.Duration("pause", time.Second, "pause after each command")
	fs.Parse(args)
	c, closeFn, err := f.dial(f.auth())
	if err != nil {
		log.Fatal(err)
	}
	defer closeFn()
	w := &promptWriter{ready: make(chan struct{})}
	s, in, err := shell(c, w)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *d)
	defer cancel()
	commands, chars := 0, 0
typing:
	for i := 0; ; i++ {
		for _, ch := range []byte(typed[i%len(typed)] + "\r") {
			select {
			case <-ctx.Done():
				break typing
			case <-time.After(*perChar):
			}
			in.Write([]byte{ch})
			chars++
		}
		commands++
		select {
		case <-ctx.Done():
			break typing
		case <-time.After(*pause):
		}
	}
	// Ctrl-C flushes the terminal's pending input: exit goes after it.
	io.WriteString(in, "\x03")
	time.Sleep(300 * time.Millisecond)
	io.WriteString(in, "exit\r")
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.Print("the shell did not exit within 10s")
	}
	fmt.Printf("typed %d commands, %d characters in %s; %d bytes of output\n", commands, chars, d.String(), w.copied.Load())
}
