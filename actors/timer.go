package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// sendTimer sends one message to an actor after a delay: the request
// actor's deadline and retry, the callback sender's wake. The actor that
// arms it stops it in its *actor.Stopping and *actor.Restarting (a restart
// builds a fresh actor with fresh timers), so no timer outlives its actor.
//
// It is time.AfterFunc with one difference: once stop returns, nothing is
// sent, not even by a timer that fired just before and is about to send. A
// bare AfterFunc sends anyway, to an actor that is gone by then: a dead
// letter. protoactor's scheduler (scheduler.TimerScheduler.SendOnce) is the
// same AfterFunc with a CancelFunc that does not wait for a send under way,
// so it would leave the same dead letter; hence this type, and not it. A
// send that comes before stop reaches the mailbox of an actor that is still
// registered: it is handled, or dropped quietly when the actor stops.
//
// The zero value is disarmed. Only the actor that owns it calls start and
// stop (on its mailbox goroutine); the lock is for the timer's goroutine.
type sendTimer struct {
	mu struct {
		sync.Mutex
		armed uint64 // the start whose send may still go out; 0: none
	}
	starts uint64 // starts so far: each gets its own number
	t      *time.Timer
}

// start arms the timer to send msg to pid after d, disarming an earlier
// start first.
func (s *sendTimer) start(d time.Duration, root *actor.RootContext, pid *actor.PID, msg any) {
	s.stop()
	s.starts++
	n := s.starts
	s.mu.Lock()
	s.mu.armed = n
	s.mu.Unlock()
	s.t = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.mu.armed != n {
			return // stopped, or started again
		}
		s.mu.armed = 0
		// Under the lock: stop waits for it, so the actor is still
		// registered (an unbounded mailbox never blocks the send).
		root.Send(pid, msg)
	})
}

// stop disarms the timer: once it returns, nothing is sent.
func (s *sendTimer) stop() {
	s.mu.Lock()
	s.mu.armed = 0
	s.mu.Unlock()
	if s.t != nil {
		s.t.Stop()
		s.t = nil
	}
}
