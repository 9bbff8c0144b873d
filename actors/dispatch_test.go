package actors

import (
	"errors"
	"fmt"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

// Runs scheduled one after another reuse one worker goroutine; runs
// scheduled while every worker is busy do not wait for them (three runs
// that each wait for the other two finish); close ends the idle workers.
func TestReuseDispatcher(t *testing.T) {
	d := newReuseDispatcher()
	idle := func(want int32) func() error {
		return func() error {
			if n := d.workers.Load(); n != want {
				return fmt.Errorf("%d workers, want %d", n, want)
			}
			return nil
		}
	}
	for i := range 20 {
		done := make(chan struct{})
		d.Schedule(func() { close(done) })
		<-done
		// The worker is idle again once it waits on the channel; wait
		// for that before the next run, so that it is handed over.
		testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
			if d.idle.Load() != 1 {
				return fmt.Errorf("run %d: no idle worker", i)
			}
			return nil
		})
	}
	if err := idle(1)(); err != nil {
		t.Fatalf("after 20 runs one after another: %v", err)
	}

	var all sync.WaitGroup
	all.Add(3)
	finished := make(chan struct{}, 3)
	for range 3 {
		d.Schedule(func() {
			all.Done()
			all.Wait() // each needs the others running at once
			finished <- struct{}{}
		})
	}
	for range 3 {
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Fatal("a run waited for a busy worker")
		}
	}
	testwait.Eventually(t, 5*time.Second, time.Millisecond, idle(3))

	d.close()
	testwait.Eventually(t, 5*time.Second, time.Millisecond, idle(0))
	ran := make(chan struct{})
	d.Schedule(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal(errors.New("a run scheduled after close did not run"))
	}
}

// goroutinesCreated is the process's count of goroutines created so far.
func goroutinesCreated(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Skip("runtime/metrics has no /sched/goroutines-created")
	}
	return s[0].Value.Uint64()
}

// A request, from its accept to its delivered callback, creates about no
// goroutine: its eight mailbox runs go to kept workers (actors/doc.go).
// With protoactor's default dispatcher it created eight or more.
func TestGoroutinesPerRequest(t *testing.T) {
	authz := &fakeAuthz{answers: map[string]session.Status{"allowedToken0000000001": session.StatusAllowed}}
	h := startEngine(t, Config{}, authz, &fakeReceiver{})
	// One request after another: at most a few mailbox runs at once, as
	// at a steady rate (a burst of more than maxMailboxWorkers runs at once
	// gives the rest goroutines of their own).
	run := func(n int) {
		for range n {
			h.waitState(h.mustAccept("allowedToken0000000001").ID, session.StateDelivered)
		}
	}
	run(50) // the workers are made
	const n = 200
	before := goroutinesCreated(t)
	run(n)
	per := float64(goroutinesCreated(t)-before) / n
	t.Logf("%.2f goroutines created per request", per)
	if per > 1 {
		t.Errorf("%.2f goroutines created per request, want at most 1", per)
	}
}
