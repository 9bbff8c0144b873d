package actors

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
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
		eventually(t, 5*time.Second, time.Millisecond, func() error {
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
	eventually(t, 5*time.Second, time.Millisecond, idle(3))

	d.close()
	eventually(t, 5*time.Second, time.Millisecond, idle(0))
	ran := make(chan struct{})
	d.Schedule(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal(errors.New("a run scheduled after close did not run"))
	}
}
