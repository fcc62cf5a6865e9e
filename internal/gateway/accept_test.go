package gateway

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
)

func TestBackoff(t *testing.T) {
	var b Backoff
	if b.Retry(fmt.Errorf("accept: %w", net.ErrClosed)) {
		t.Error("a closed listener is retried")
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	if !b.Retry(emfile) || !b.Retry(errors.New("something else")) {
		t.Error("EMFILE or an unknown error stops the gateway")
	}
	if b.delay != 10e6 {
		t.Errorf("delay after two failures = %v; want 10ms", b.delay)
	}
	b.Reset()
	if b.delay != 0 {
		t.Error("Reset kept the delay")
	}
}
