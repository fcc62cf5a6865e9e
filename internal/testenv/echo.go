package testenv

import (
	"io"
	"net"
	"testing"
)

// EchoServer listens on a loopback port and echoes what each connection
// sends; it stands for a service only a target can reach, for port
// forwarding tests. It returns the address and stops at the test's end.
func EchoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}
