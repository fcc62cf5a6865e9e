package gateway

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/authz"
)

// checker answers Check from a function; Watch depends on nothing else.
type checker func() (authz.Decision, error)

func (f checker) Check(context.Context, authz.Request) (authz.Decision, error) { return f() }

var req = authz.Request{Principal: authz.UID{Type: authz.TypeUser, ID: "alice"}, Action: authz.ActionConnect,
	Resource: authz.UID{Type: authz.TypeTarget, ID: "web1"}}

// watch runs Watch and returns the message end got ("" if none) once
// Watch returned.
func watch(ctx context.Context, c Checker, deadline time.Time) string {
	var mu sync.Mutex
	msg, calls := "", 0
	Watch(ctx, c, req, deadline, time.Millisecond, nil, func(m string) {
		mu.Lock()
		defer mu.Unlock()
		msg = m
		calls++
	})
	if calls > 1 {
		return "end called more than once"
	}
	return msg
}

func TestWatch(t *testing.T) {
	allow := authz.Decision{Allow: true}
	t.Run("deadline", func(t *testing.T) {
		if got := watch(context.Background(), checker(func() (authz.Decision, error) { return allow, nil }),
			time.Now().Add(20*time.Millisecond)); got != MsgExpired {
			t.Errorf("end(%q); want %q", got, MsgExpired)
		}
	})
	t.Run("withdrawn", func(t *testing.T) {
		n := 0
		c := checker(func() (authz.Decision, error) {
			n++
			return authz.Decision{Allow: n < 3}, nil
		})
		if got := watch(context.Background(), c, time.Time{}); got != MsgWithdrawn || n != 3 {
			t.Errorf("end(%q) after %d checks; want %q after 3", got, n, MsgWithdrawn)
		}
	})
	t.Run("errors fail closed", func(t *testing.T) {
		n := 0
		c := checker(func() (authz.Decision, error) {
			n++
			if n == 2 { // a success in between resets the count
				return allow, nil
			}
			return authz.Decision{}, errors.New("store down")
		})
		if got := watch(context.Background(), c, time.Time{}); got != MsgUnchecked || n != 1+1+maxCheckErrors {
			t.Errorf("end(%q) after %d checks; want %q after %d", got, n, MsgUnchecked, 2+maxCheckErrors)
		}
	})
	t.Run("ctx ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if got := watch(ctx, checker(func() (authz.Decision, error) { return allow, nil }), time.Time{}); got != "" {
			t.Errorf("end(%q) though access lasted; want no call", got)
		}
	})
}

// A re-check that hangs neither keeps the session past its deadline nor
// counts as allowing.
func TestWatchHangingCheck(t *testing.T) {
	got := make(chan string, 2)
	go Watch(context.Background(), hangCtx{}, req, time.Now().Add(50*time.Millisecond), time.Millisecond, nil,
		func(m string) { got <- m })
	select {
	case m := <-got:
		if m != MsgExpired && m != MsgUnchecked {
			t.Errorf("end(%q)", m)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a hanging re-check kept the session past its deadline")
	}
}

// hangCtx is a Checker that blocks until its context ends, then fails.
type hangCtx struct{}

func (hangCtx) Check(ctx context.Context, _ authz.Request) (authz.Decision, error) {
	<-ctx.Done()
	return authz.Decision{}, ctx.Err()
}
