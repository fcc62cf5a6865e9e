//go:build !linux

package postgres

import "net"

// eventLoops is empty where there is no event loop (loop_linux.go):
// sessions are relayed in goroutines.
type eventLoops struct{}

func newLoopConn(c net.Conn) net.Conn { return c }

func (r *relay) runLoop() (status string, ok bool) { return "", false }
