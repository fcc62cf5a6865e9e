//go:build linux

package postgres

// The event loop relays sessions the way a connection pooler does: one
// goroutine per loop waits in epoll_wait for the sockets of all its
// sessions and does non-blocking reads and writes itself. The two
// goroutines per session that run in relay.go cost each transaction two
// parks and two wake-ups through the Go scheduler and netpoller (futex
// and epoll calls, thread switches); here a transaction costs the four
// reads and writes it needs plus a share of one epoll_wait. Both ways
// share the message handling (clientBatch, serverBatch).
//
// A session enters a loop once logged in (runLoop) when its client is a
// loopConn (every connection serveConn accepts on Linux) and its upstream
// a plain socket; otherwise (upstream TLS) it runs in goroutines. Its
// sockets are then taken out of the Go netpoller (duplicated, the
// originals closed) and put into the loop's epoll set, edge-triggered.
// crypto/tls keeps working over the duplicated client socket: a loopConn
// returns errWouldBlock, a temporary net.Error, when the socket is
// drained, which makes tls.Conn keep a partly read record for later.
//
// Back-pressure and bounded memory as in the goroutines: a side is read
// only while the other side has written everything forwarded to it, and
// one read batch (flushOut plus one message) is the most buffered per
// direction. A session's work per loop turn is bounded (loopTurns), so one
// busy session does not starve the others.
//
// Nothing in the loop may block for long: rule-match audit appends run in
// a goroutine, one per batch, while the batch waits (relay.auditQ);
// upstream cancel requests and the final flush to a slow client run in
// the session's own goroutine, which waits in runLoop while the loop
// relays. Statements are recorded in the loop without waiting
// (NoWaitSession, relay.record): when a record finds the recording
// backlogged (its store fallen behind), the session is parked (park): its
// client is no longer read, whatever its socket's events, while its
// server is, so the statements already forwarded complete and are
// recorded, in order; the recording's writer then posts the session back
// (NotifyDrained, unpark). So a session whose recording falls behind
// waits for it, as Record's wait makes it do in the goroutines, without
// holding up the other sessions of its loop, and memory stays bounded:
// past the recording's own bound, by the statements the client had sent
// before it was parked. Every record is kept, in order, and a recording
// failure still ends the session; a kill or shutdown ends a parked
// session as any other, and a drained post for an ended session is
// dropped (post).

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// epollET is EPOLLET as an unsigned flag (syscall declares it negative).
const epollET = 1 << 31

// yieldEvery is how often a busy loop yields to the Go scheduler.
const yieldEvery = 2 * time.Millisecond

// A loop waits in epoll_wait, holding its P: sysmon takes the P back
// after 10 ms in a system call (and a goroutine that has not yielded for
// 10 ms is preempted), then wakes up every 20 µs for a while. So a loop
// waits at most idleWait ms at a time, yielding in between, until it has
// been idle idleTurns times in a row; only then does it wait as long as it
// takes, and pays that once per idle period.
const (
	idleWait  = 5
	idleTurns = 20
)

// loopTurns bounds the read batches one session handles per loop turn and
// direction.
const loopTurns = 8

// errWouldBlock is a loopConn's Read error once its socket is drained.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "postgres gateway: no data yet" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true } // crypto/tls keeps its state

// A loopConn is a connection an event loop can take over. Until detach it
// is the net.Conn it wraps; afterwards it reads and writes a duplicate of
// that connection's socket without blocking, and only the loop (or the
// goroutine the loop hands the session back to) may use it.
type loopConn struct {
	net.Conn
	fd       int    // -1 until detached; -2 once closed
	canRead  bool   // the socket may hold data: edge seen, not yet drained
	hup      bool   // the peer closed or the socket failed: read until EOF
	canWrite bool   // the last write did not fail with EAGAIN
	wbuf     []byte // wbuf[woff:] is still to be written
	woff     int
}

// newLoopConn wraps c, if it is a socket, so that a relay can move it into
// an event loop.
func newLoopConn(c net.Conn) net.Conn {
	if _, ok := c.(syscall.Conn); !ok {
		return c
	}
	return &loopConn{Conn: c, fd: -1}
}

// loopConnOf returns the loopConn under a client connection, or nil.
func loopConnOf(c net.Conn) *loopConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if pc, ok := c.(*prefixConn); ok {
		if len(pc.prefix) > 0 {
			return nil
		}
		c = pc.Conn
	}
	lc, _ := c.(*loopConn)
	return lc
}

// dupSocket returns a close-on-exec duplicate of c's socket.
func dupSocket(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var dupErr error
	err = rc.Control(func(fd uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			dupErr = os.NewSyscallError("fcntl", errno)
			return
		}
		nfd = int(r)
	})
	if err == nil {
		err = dupErr
	}
	if err != nil {
		return -1, err
	}
	if err := syscall.SetNonblock(nfd, true); err != nil {
		syscall.Close(nfd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}

// detach switches c to fd, a duplicate of its socket, and closes the
// original (which leaves the Go netpoller).
func (c *loopConn) detach(fd int) {
	c.Conn.Close()
	c.fd, c.canRead, c.canWrite = fd, true, true
}

func (c *loopConn) Read(p []byte) (int, error) {
	if c.fd == -1 {
		return c.Conn.Read(p)
	}
	if c.fd < 0 {
		return 0, net.ErrClosed
	}
	if !c.canRead {
		return 0, errWouldBlock
	}
	for {
		n, err := rawRead(c.fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			c.canRead = false
			return 0, errWouldBlock
		case err != nil:
			return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		// A short read drained the socket: what arrives later raises a
		// new edge. (A FIN already seen does not: read on to EOF.)
		if n < len(p) && !c.hup {
			c.canRead = false
		}
		return n, nil
	}
}

// Write queues p once detached; flush writes it.
func (c *loopConn) Write(p []byte) (int, error) {
	if c.fd == -1 {
		return c.Conn.Write(p)
	}
	if c.fd < 0 {
		return 0, net.ErrClosed
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

// rawRead and rawWrite are read(2) and write(2) on a non-blocking socket:
// they never block, so they skip the scheduler's syscall bookkeeping.
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// pending reports whether queued bytes are still to be written.
func (c *loopConn) pending() bool { return c.woff < len(c.wbuf) }

// flush writes the queued bytes until done or the socket is full.
func (c *loopConn) flush() error {
	for c.woff < len(c.wbuf) {
		if !c.canWrite {
			return nil
		}
		n, err := rawWrite(c.fd, c.wbuf[c.woff:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			c.canWrite = false
			return nil
		case err != nil:
			return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
		}
		c.woff += n
	}
	if cap(c.wbuf) > 4*flushOut {
		c.wbuf = nil // after a large message: do not keep its buffer
	}
	c.wbuf, c.woff = c.wbuf[:0], 0
	return nil
}

// drain writes the queued bytes, waiting up to d for the socket.
func (c *loopConn) drain(d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		c.canWrite = true
		if c.flush() != nil || !c.pending() || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close, once detached, makes one attempt to write what is queued (a TLS
// close_notify) and closes the socket.
func (c *loopConn) Close() error {
	if c.fd == -1 {
		return c.Conn.Close()
	}
	if c.fd < 0 {
		return nil
	}
	c.canWrite = true
	c.flush()
	err := syscall.Close(c.fd)
	c.fd, c.wbuf = -2, nil
	return err
}

// Deadlines do not apply to a detached loopConn: it never blocks.
func (c *loopConn) SetDeadline(t time.Time) error {
	if c.fd == -1 {
		return c.Conn.SetDeadline(t)
	}
	return nil
}

func (c *loopConn) SetReadDeadline(t time.Time) error {
	if c.fd == -1 {
		return c.Conn.SetReadDeadline(t)
	}
	return nil
}

func (c *loopConn) SetWriteDeadline(t time.Time) error {
	if c.fd == -1 {
		return c.Conn.SetWriteDeadline(t)
	}
	return nil
}

// eventLoops are a Server's event loops, started on demand: one per four
// Ps (GOMAXPROCS), at least one. A loop's goroutine ends when its last
// session does.
type eventLoops struct {
	off   atomic.Bool // relay in goroutines (for benchmarks)
	once  sync.Once
	loops []*evLoop
}

func (ls *eventLoops) init() {
	ls.once.Do(func() {
		ls.loops = make([]*evLoop, max(1, runtime.GOMAXPROCS(0)/4))
		for i := range ls.loops {
			ls.loops[i] = &evLoop{epfd: -1}
		}
	})
}

// pick returns the loop with the fewest sessions.
func (ls *eventLoops) pick() *evLoop {
	ls.init()
	best := ls.loops[0]
	for _, l := range ls.loops[1:] {
		if l.load.Load() < best.load.Load() {
			best = l
		}
	}
	return best
}

// sessions returns the number of sessions in the loops.
func (ls *eventLoops) sessions() int {
	ls.init()
	n := 0
	for _, l := range ls.loops {
		n += int(l.load.Load())
	}
	return n
}

// An evLoop relays sessions from one goroutine (run).
type evLoop struct {
	load atomic.Int32 // sessions added and not ended

	// mu protects the following: add and post (from any goroutine) hand
	// work to run through inbox and posts, and wake it through the pipe
	// (woken: a byte is in the pipe or run is about to look).
	mu      sync.Mutex
	running bool
	epfd    int
	wakeR   int
	wakeW   int
	woken   bool
	inbox   []*evSession
	posts   []evPost

	// Owned by run.
	fds  map[int32]*evSession
	runq []*evSession
}

// An evPost is work for a session that the loop must do itself.
type evPost struct {
	es      *evSession
	kill    string // non-empty: end the session with this message
	drained bool   // else, if set: its recording caught up, unpark it; else resume it
}

// An evSession is a relay in a loop.
type evSession struct {
	r      *relay
	loop   *evLoop
	cl, up *loopConn
	cf, sf *framer
	sout   []byte
	queued bool // in loop.runq
	parked bool // the client is not read until the recording drains (park)
	ended  bool // protected by loop.mu
	done   chan evResult
}

type evResult struct {
	status string
	busy   bool // killed while the server owed responses: cancel upstream
	drop   bool // do not send what is queued for the server
}

// runLoop relays in an event loop if it can (ok), after run has sent the
// welcome, and returns the session's status like run.
func (r *relay) runLoop() (status string, ok bool) {
	cl := loopConnOf(r.client)
	upConn, isSock := r.up.(syscall.Conn)
	if cl == nil || cl.fd != -1 || !isSock || r.s.loops.off.Load() {
		return "", false
	}
	loop := r.s.loops.pick()
	cfd, err := dupSocket(cl.Conn.(syscall.Conn))
	if err != nil {
		r.log.Warn("postgres gateway: relaying in goroutines", "err", err)
		return "", false
	}
	ufd, err := dupSocket(upConn)
	if err != nil {
		syscall.Close(cfd)
		r.log.Warn("postgres gateway: relaying in goroutines", "err", err)
		return "", false
	}
	up := &loopConn{Conn: r.up, fd: -1}
	cl.detach(cfd)
	up.detach(ufd)
	r.up = up
	r.async = true
	r.noWait = noWaitOf(r.l.sess)
	es := &evSession{r: r, loop: loop, cl: cl, up: up,
		cf: newFramer(r.client, readBuf, r.s.maxMsg), sf: newFramer(up, readBuf, 1<<30),
		done: make(chan evResult, 1)}
	r.wake = func() { loop.post(evPost{es: es}) }
	if err := loop.add(es); err != nil {
		r.log.Error("postgres gateway: event loop", "err", err)
		up.Close()
		return StatusError, true
	}
	stopKill := context.AfterFunc(r.l.sess.Context(), func() {
		msg := r.l.sess.KillMessage()
		if msg == "" {
			msg = "the session was terminated by an administrator"
		}
		loop.post(evPost{es: es, kill: msg})
	})
	stopShutdown := context.AfterFunc(r.s.ctx, func() {
		loop.post(evPost{es: es, kill: "the gateway is shutting down"})
	})
	res := <-es.done
	stopKill()
	stopShutdown()
	if res.busy {
		if t, ok := r.s.keys.lookup(r.l.clientKey.pid, r.l.clientKey.secret[:]); ok {
			r.s.cancelUpstream(t)
		}
	}
	r.auditWG.Wait() // before what waited for it is sent
	if res.drop {
		up.wbuf, up.woff = nil, 0
	}
	up.Close()
	cl.drain(2 * time.Second)
	return res.status, true
}

// add hands es to the loop, starting its goroutine if needed.
func (l *evLoop) add(es *evSession) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.running {
		if err := l.open(); err != nil {
			return err
		}
		l.running = true
		go l.run()
	}
	l.load.Add(1)
	l.inbox = append(l.inbox, es)
	l.wakeLocked()
	return nil
}

// open creates the epoll set and the wake pipe. mu must be held.
func (l *evLoop) open() error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return os.NewSyscallError("pipe2", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(p[0])
		syscall.Close(p[1])
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.epfd, l.wakeR, l.wakeW, l.woken = epfd, p[0], p[1], false
	l.fds = map[int32]*evSession{}
	return nil
}

// post hands p to the loop unless its session has ended.
func (l *evLoop) post(p evPost) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.es.ended {
		return
	}
	l.posts = append(l.posts, p)
	l.wakeLocked()
}

// wakeLocked makes run look at inbox and posts. mu must be held.
func (l *evLoop) wakeLocked() {
	if !l.woken {
		l.woken = true
		syscall.Write(l.wakeW, []byte{0})
	}
}

// run is the loop's goroutine: it ends when no session is left.
func (l *evLoop) run() {
	events := make([]syscall.EpollEvent, 128)
	var wakeBuf [64]byte
	var inbox []*evSession
	var posts []evPost
	timeout, idle := 0, 0
	yielded := time.Now()
	for {
		// A goroutine that runs for 10 ms without yielding is preempted
		// by sysmon, which then polls every 20 µs for a while: yield
		// first.
		if now := time.Now(); now.Sub(yielded) > yieldEvery {
			runtime.Gosched()
			yielded = now
		}
		n, err := syscall.EpollWait(l.epfd, events, timeout)
		if err != nil && err != syscall.EINTR {
			l.fail(os.NewSyscallError("epoll_wait", err))
			return
		}
		switch {
		case n > 0:
			idle = 0
		case err == nil && timeout != 0:
			idle++
		}
		woken := false
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == l.wakeR {
				syscall.Read(l.wakeR, wakeBuf[:])
				woken = true
				continue
			}
			es := l.fds[ev.Fd]
			if es == nil {
				continue // ended earlier in this batch
			}
			c := es.cl
			if int(ev.Fd) == es.up.fd {
				c = es.up
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				c.canRead = true
			}
			if ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				c.hup = true
			}
			if ev.Events&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				c.canWrite = true
			}
			l.queue(es)
		}

		if woken { // else l.woken: a byte is in the pipe, for the next turn
			l.mu.Lock()
			inbox, l.inbox = append(inbox[:0], l.inbox...), l.inbox[:0]
			posts, l.posts = append(posts[:0], l.posts...), l.posts[:0]
			l.woken = false
			l.mu.Unlock()
		}
		for _, es := range inbox {
			if err := l.register(es); err != nil {
				es.r.log.Error("postgres gateway: event loop", "err", err)
				l.end(es, evResult{status: StatusError, drop: true})
				continue
			}
			l.queue(es)
		}
		clear(inbox)
		inbox = inbox[:0]
		for _, p := range posts {
			if p.es.ended {
				continue
			}
			switch {
			case p.kill != "":
				p.es.kill(p.kill)
			case p.drained:
				p.es.unpark()
			default:
				l.queue(p.es)
			}
		}
		clear(posts)
		posts = posts[:0]

		q := l.runq
		l.runq = nil
		for _, es := range q {
			es.queued = false
			if es.ended {
				continue
			}
			more, fromServer, err := es.work()
			switch {
			case err != nil:
				es.fail(fromServer, err)
			case more:
				l.queue(es)
			}
		}
		clear(q)
		switch {
		case l.runq != nil:
			timeout = 0 // sessions with work left: poll, then go on
		case idle < idleTurns:
			l.runq = q[:0]
			timeout = idleWait
		default:
			l.runq = q[:0]
			timeout = -1
		}

		if len(l.fds) == 0 && len(l.runq) == 0 {
			l.mu.Lock()
			if len(l.inbox) == 0 {
				l.closeLocked()
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
		}
	}
}

func (l *evLoop) queue(es *evSession) {
	if !es.queued {
		es.queued = true
		l.runq = append(l.runq, es)
	}
}

// register adds es's sockets to the epoll set.
func (l *evLoop) register(es *evSession) error {
	for _, c := range []*loopConn{es.cl, es.up} {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET, Fd: int32(c.fd)}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
			if c == es.up {
				syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, es.cl.fd, nil)
				delete(l.fds, int32(es.cl.fd))
			}
			return os.NewSyscallError("epoll_ctl", err)
		}
		l.fds[int32(c.fd)] = es
	}
	return nil
}

// end removes es from the loop and hands it back to runLoop.
func (l *evLoop) end(es *evSession, res evResult) {
	for _, c := range []*loopConn{es.cl, es.up} {
		if l.fds[int32(c.fd)] == es {
			syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
			delete(l.fds, int32(c.fd))
		}
	}
	l.mu.Lock()
	es.ended = true
	l.mu.Unlock()
	l.load.Add(-1)
	es.done <- res
}

// fail ends every session after the loop itself failed.
func (l *evLoop) fail(err error) {
	l.mu.Lock()
	inbox := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	seen := map[*evSession]bool{}
	for _, es := range append(inbox, l.runq...) {
		seen[es] = true
	}
	for _, es := range l.fds {
		seen[es] = true
	}
	for es := range seen {
		if !es.ended {
			es.r.log.Error("postgres gateway: event loop", "err", err)
			l.end(es, evResult{status: StatusError, drop: true})
		}
	}
	l.runq = nil
	l.mu.Lock()
	l.closeLocked()
	l.mu.Unlock()
}

// closeLocked releases the epoll set and the pipe. mu must be held.
func (l *evLoop) closeLocked() {
	syscall.Close(l.epfd)
	syscall.Close(l.wakeR)
	syscall.Close(l.wakeW)
	clear(l.posts)
	l.epfd, l.running, l.woken, l.fds, l.posts = -1, false, false, nil, l.posts[:0]
}

// work flushes what is queued and relays what each side sent, within
// loopTurns batches per direction: more is true when work is left.
func (es *evSession) work() (more, fromServer bool, err error) {
	if err := es.cl.flush(); err != nil {
		return false, true, err
	}
	if !es.r.auditing.Load() {
		if err := es.up.flush(); err != nil {
			return false, false, err
		}
	}
	moreC, err := es.pumpClient()
	if err != nil {
		return false, false, err
	}
	moreS, err := es.pumpServer()
	if err != nil {
		return false, true, err
	}
	if es.r.backlogged && !es.parked {
		es.park()
	}
	return moreC || moreS, false, nil
}

// park stops reading the client because a statement's record found the
// recording backlogged (its store behind): the statements already
// forwarded still complete and are recorded, since the server is read
// on, but no new one is read until the recording drains, which posts
// drained (unpark). Until then the session is queued only by its
// sockets' events, and pumpClient returns at once.
func (es *evSession) park() {
	es.parked = true
	es.r.backlogged = false
	es.r.noWait.NotifyDrained(func() { es.loop.post(evPost{es: es, drained: true}) })
}

// unpark resumes reading the client once the recording drained, unless a
// statement recorded since park found it backlogged again: then it parks
// anew, and NotifyDrained posts again at once if that backlog is gone
// too.
func (es *evSession) unpark() {
	es.parked = false
	if es.r.backlogged {
		es.park()
		return
	}
	es.loop.queue(es)
}

// pumpClient forwards the client's messages while the server takes them.
func (es *evSession) pumpClient() (more bool, err error) {
	r := es.r
	defer func() {
		if err == nil && es.cl.pending() {
			err = es.cl.flush() // crypto/tls answered a KeyUpdate
		}
	}()
	for range loopTurns {
		if es.up.pending() || r.auditing.Load() || es.parked {
			return false, nil // resumed when flushed (EPOLLOUT), by wake or by unpark
		}
		start := len(es.up.wbuf)
		var full, end bool
		es.up.wbuf, full, end, err = r.clientBatch(es.cf, es.up.wbuf)
		if len(r.auditQ) > 0 {
			es.startAudits() // the batch waits for its events
		}
		if err != nil {
			es.up.wbuf = es.up.wbuf[:start]
			return false, err
		}
		if n := len(es.up.wbuf) - start; n > 0 {
			r.l.sess.AddBytes(int64(n), 0)
			if !r.auditing.Load() {
				if err := es.up.flush(); err != nil {
					return false, err
				}
			}
		}
		if end {
			return false, errTerminated
		}
		if full {
			continue
		}
		if err := es.cf.fill(); err != nil {
			if err == errWouldBlock {
				return false, nil
			}
			return false, err
		}
	}
	return true, nil
}

// startAudits appends the queued rule-match events in a goroutine, which
// wakes the session when done.
func (es *evSession) startAudits() {
	r := es.r
	evs := r.auditQ
	r.auditQ = nil
	r.auditing.Store(true)
	r.auditWG.Add(1)
	go func() {
		defer r.auditWG.Done()
		for _, ev := range evs {
			r.audit(ev)
		}
		r.auditing.Store(false)
		r.wake()
	}()
}

// pumpServer forwards the server's messages while the client takes them.
func (es *evSession) pumpServer() (more bool, err error) {
	r := es.r
	for range loopTurns {
		if es.cl.pending() {
			return false, nil // resumed when flushed (EPOLLOUT)
		}
		var full bool
		es.sout, full, err = r.serverBatch(es.sf, es.sout[:0])
		if err != nil {
			return false, err
		}
		if len(es.sout) > 0 {
			if _, err := r.client.Write(es.sout); err != nil {
				return false, err
			}
			r.l.sess.AddBytes(0, int64(len(es.sout)))
			if err := es.cl.flush(); err != nil {
				return false, err
			}
		}
		if cap(es.sout) > 4*flushOut {
			es.sout = nil
		}
		if full {
			continue
		}
		if err := es.sf.fill(); err != nil {
			if err == errWouldBlock {
				return false, nil
			}
			return false, err
		}
	}
	return true, nil
}

// fail ends the session after err, as run does when a goroutine returns.
func (es *evSession) fail(fromServer bool, err error) {
	r := es.r
	var ce *clientError
	if !fromServer && errors.As(err, &ce) {
		// The client broke the protocol: say why, unless the server's
		// message in flight would be cut.
		if es.sf.atBoundary() {
			r.client.Write(fatal(nil, ce.code, ce.msg))
			es.cl.flush()
		}
		r.log.Info("postgres gateway: relay ended", "err", err)
		es.loop.end(es, evResult{status: StatusError, drop: true})
		return
	}
	if !errors.Is(err, errTerminated) && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		r.log.Info("postgres gateway: relay ended", "from_server", fromServer, "err", err)
	}
	res := evResult{status: StatusClosed, drop: !errors.Is(err, errTerminated)}
	if errors.Is(err, errRecording) {
		res.status = StatusError
	}
	es.loop.end(es, res)
}

// kill ends the session with a FATAL error for the client; runLoop
// cancels the server's work.
func (es *evSession) kill(msg string) {
	r := es.r
	r.log.Info("postgres gateway: session killed", "reason", msg)
	busy := r.pending()
	if es.sf.atBoundary() {
		r.client.Write(fatal(nil, codeAdminShutdown, "warder: "+msg))
		es.cl.flush()
	}
	es.loop.end(es, evResult{status: StatusKilled, busy: busy, drop: true})
}
