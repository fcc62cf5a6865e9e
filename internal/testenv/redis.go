package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisServer is the Redis (6 or later) the tests use, found at
// $WARDER_TEST_REDIS (host:port), by default 127.0.0.1:6379, whose default
// user needs no password (scripts/services.sh starts such a server). Tests
// create their own ACL users (CreateUser) with passwords, so AUTH checks
// passwords for real.
type RedisServer struct {
	Host string
	Port int
}

// Redis returns the test Redis server, failing t if it does not answer.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	addr := os.Getenv("WARDER_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("testenv: $WARDER_TEST_REDIS: %v", err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("testenv: $WARDER_TEST_REDIS: %v", err)
	}
	s := &RedisServer{Host: host, Port: p}
	if rep, err := s.do("PING"); err != nil || rep != "PONG" {
		t.Fatalf("testenv: Redis not reachable without a password at %s (run `make test`, which starts it): %q %v", addr, rep, err)
	}
	return s
}

// Addr is host:port.
func (s *RedisServer) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Do runs one command as the default user and returns its reply (simple
// string, integer or bulk string); an error reply fails t.
func (s *RedisServer) Do(t testing.TB, args ...string) string {
	t.Helper()
	rep, err := s.do(args...)
	if err != nil {
		t.Fatalf("testenv: redis %s: %v", args[0], err)
	}
	return rep
}

// CreateUser creates an ACL user with a unique name (prefix wt_), enabled,
// with password and the given rules (default "~*", "+@all"), and deletes it
// when t ends. It returns the name.
func (s *RedisServer) CreateUser(t testing.TB, password string, rules ...string) string {
	t.Helper()
	name := "wt_" + randomHex(6)
	if len(rules) == 0 {
		rules = []string{"~*", "+@all"}
	}
	s.Do(t, append([]string{"ACL", "SETUSER", name, "reset", "on", ">" + password}, rules...)...)
	t.Cleanup(func() {
		if _, err := s.do("ACL", "DELUSER", name); err != nil {
			t.Logf("testenv: redis ACL DELUSER %s: %v", name, err)
		}
	})
	return name
}

// do is a deliberately separate, minimal RESP client, so tests do not set
// up their fixtures with the code under test.
func (s *RedisServer) do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
