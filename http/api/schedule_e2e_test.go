package api_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// scheduleReceiver answers each callback with what answer says, and
// records, per webhook-id, every POST and the 2xx among them.
type scheduleReceiver struct {
	mu        sync.Mutex
	posts     map[string][]time.Time
	delivered map[string]int
	answer    func(id string, n int) (code int, retryAfter string) // n: this id's POSTs so far, this one included
}

func (r *scheduleReceiver) handle(ctx *fasthttp.RequestCtx) {
	id := string(ctx.Request.Header.Peek("webhook-id"))
	r.mu.Lock()
	r.posts[id] = append(r.posts[id], time.Now())
	code, retryAfter := 204, ""
	if r.answer != nil {
		code, retryAfter = r.answer(id, len(r.posts[id]))
	}
	if code/100 == 2 {
		r.delivered[id]++
	}
	r.mu.Unlock()
	if retryAfter != "" {
		ctx.Response.Header.Set("Retry-After", retryAfter)
	}
	ctx.SetStatusCode(code)
}

func newScheduleReceiver() *scheduleReceiver {
	return &scheduleReceiver{posts: map[string][]time.Time{}, delivered: map[string]int{}}
}

func (r *scheduleReceiver) postTimes(id string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.posts[id]...)
}

// waitStates waits until every id is in state want.
func waitStates(t *testing.T, svc *node.Node, ids []string, want session.State) {
	t.Helper()
	eventually(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, id := range ids {
			rec, err := svc.Store().Get(id)
			if err != nil {
				return err
			}
			if rec.State != want {
				return fmt.Errorf("%s is %s after %d attempts, want %s", id, rec.State, rec.CallbackAttempts, want)
			}
		}
		return nil
	})
}

// waitAttempts waits until every id has had at least n callback attempts.
func waitAttempts(t *testing.T, svc *node.Node, ids []string, n int) {
	t.Helper()
	eventually(t, 20*time.Second, 5*time.Millisecond, func() error {
		for _, id := range ids {
			if rec, err := svc.Store().Get(id); err != nil || rec.CallbackAttempts < n {
				return fmt.Errorf("%s: %d attempts (%v), want %d", id, rec.CallbackAttempts, err, n)
			}
		}
		return nil
	})
}

// compressed is the default schedule's shape in milliseconds.
var compressed = schedule.Delays{0, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}

// A receiver that is down (503, or refusing connections) for a while and
// then back gets every callback, each exactly once, and the records end
// delivered.
func TestScheduleReceiverDownThenBack(t *testing.T) {
	const n = 20
	t.Run("503", func(t *testing.T) {
		authz := startFakeAuthz(t, 0)
		recv := newScheduleReceiver()
		var mu sync.Mutex
		down := true
		recv.answer = func(string, int) (int, string) {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return 503, ""
			}
			return 204, ""
		}
		url := serveLoopback(t, recv.handle) + "/cb"
		svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
			CallbackSchedule: compressed, CallbackMaxAge: time.Minute})
		ids := make([]string, n)
		for i := range ids {
			ids[i] = mustAccept(t, svc, tokAllowed, url)
		}
		waitAttempts(t, svc, ids, 3) // each callback failed three times
		mu.Lock()
		down = false
		mu.Unlock()
		waitStates(t, svc, ids, session.StateDelivered)
		recv.mu.Lock()
		defer recv.mu.Unlock()
		for _, id := range ids {
			if d := recv.delivered[id]; d != 1 {
				t.Errorf("%s delivered %d times, want 1", id, d)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		authz := startFakeAuthz(t, 0)
		recv := newScheduleReceiver()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close() // nothing listens: connections are refused
		svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
			CallbackSchedule: compressed, CallbackMaxAge: time.Minute})
		ids := make([]string, n)
		for i := range ids {
			ids[i] = mustAccept(t, svc, tokAllowed, "http://"+addr+"/cb")
		}
		waitAttempts(t, svc, ids, 3)
		if ln, err = net.Listen("tcp", addr); err != nil { // back, on the same address
			t.Fatal(err)
		}
		srv := &fasthttp.Server{Handler: recv.handle}
		go srv.Serve(ln) //nolint:errcheck // ends at Shutdown
		t.Cleanup(func() { _ = srv.Shutdown() })
		waitStates(t, svc, ids, session.StateDelivered)
		recv.mu.Lock()
		defer recv.mu.Unlock()
		for _, id := range ids {
			if d, p := recv.delivered[id], len(recv.posts[id]); d != 1 || p != 1 {
				t.Errorf("%s: %d POSTs, %d delivered, want 1 and 1", id, p, d)
			}
		}
	})
}

// 410 Gone stops delivery at once: failed after one POST, no more.
func TestScheduleGoneStopsAtOnce(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := newScheduleReceiver()
	recv.answer = func(string, int) (int, string) { return 410, "" }
	url := serveLoopback(t, recv.handle) + "/cb"
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackSchedule: schedule.Delays{0, time.Millisecond}, CallbackMaxAttempts: 100, CallbackMaxAge: time.Minute})
	id := mustAccept(t, svc, tokAllowed, url)
	waitStates(t, svc, []string{id}, session.StateFailed)
	rec, err := svc.Store().Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.CallbackAttempts != 1 || !strings.Contains(rec.LastError, "410 Gone") {
		t.Errorf("%d attempts, last error %q: want 1 and 410 Gone", rec.CallbackAttempts, rec.LastError)
	}
	if p := len(recv.postTimes(id)); p != 1 {
		t.Errorf("%d POSTs, want 1", p)
	}
}

// A receiver's Retry-After lengthens the next delay: with a 10ms schedule,
// the retry after "Retry-After: 1" comes a second later, not sooner.
func TestScheduleRetryAfterLengthens(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := newScheduleReceiver()
	recv.answer = func(_ string, n int) (int, string) {
		if n == 1 {
			return 503, "1"
		}
		return 204, ""
	}
	url := serveLoopback(t, recv.handle) + "/cb"
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackSchedule: schedule.Delays{0, 10 * time.Millisecond}, CallbackMaxAge: time.Minute})
	id := mustAccept(t, svc, tokAllowed, url)
	waitStates(t, svc, []string{id}, session.StateDelivered)
	posts := recv.postTimes(id)
	if len(posts) != 2 {
		t.Fatalf("%d POSTs, want 2", len(posts))
	}
	if gap := posts[1].Sub(posts[0]); gap < time.Second {
		t.Errorf("the retry came %v after the 503, want at least the Retry-After, 1s", gap)
	}
}

// No attempt past --callback-max-age: a receiver that never recovers
// ends failed by the max age, with attempts left in the schedule.
func TestScheduleMaxAgeEndsInFailed(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := newScheduleReceiver()
	recv.answer = func(string, int) (int, string) { return 503, "" }
	url := serveLoopback(t, recv.handle) + "/cb"
	const maxAge = 300 * time.Millisecond
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackSchedule: schedule.Delays{0, 50 * time.Millisecond}, CallbackMaxAttempts: 1000, CallbackMaxAge: maxAge})
	id := mustAccept(t, svc, tokAllowed, url)
	waitStates(t, svc, []string{id}, session.StateFailed)
	rec, err := svc.Store().Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.CallbackAttempts < 2 || rec.CallbackAttempts >= 1000 || !strings.Contains(rec.LastError, "max age") {
		t.Errorf("%d attempts, last error %q: want failed by the max age", rec.CallbackAttempts, rec.LastError)
	}
	if p := len(recv.postTimes(id)); p != rec.CallbackAttempts {
		t.Errorf("%d POSTs for %d attempts", p, rec.CallbackAttempts)
	}
	// The last attempt was planned at the max age: it started no earlier.
	if last := rec.Attempts[len(rec.Attempts)-1].At; last.Before(rec.DecidedAt.Add(maxAge)) {
		t.Errorf("the last attempt ended %v after the decision, before the max age %v", last.Sub(rec.DecidedAt), maxAge)
	}
}
