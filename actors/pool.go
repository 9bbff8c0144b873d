package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/sony/gobreaker/v2"

	"github.com/chargeauth/chargeauth/session"
)

// errDeadlinePassed answers an *Authorize that waited past its deadline: no
// call is made for it.
var errDeadlinePassed = errors.New("actors: deadline passed before the call")

// authzPool owns AuthzConcurrency workers and a FIFO of waiting calls. A free
// worker takes the oldest waiting call whose deadline has not passed, so one
// slow call never holds up calls queued behind it while another worker is
// idle (no per-worker mailboxes, unlike a round-robin router). The queue is
// bounded by MaxInflight: each request actor has at most one call waiting.
//
// The workers are goroutines that live as long as the engine, fed through
// Engine.calls, not actors: an actor runs each message on a fresh goroutine,
// which grew its stack again for every HTTP call (2.5% of the service's
// CPU). The pool's count of idle workers bounds what it puts in the channel
// to its capacity, so a send never blocks.
type authzPool struct {
	e       *Engine
	log     *slog.Logger
	idle    int
	waiting []waitingCall
}

type waitingCall struct {
	msg     *Authorize
	replyTo *actor.PID
}

func newAuthzPool(e *Engine) *authzPool {
	return &authzPool{e: e, log: e.log.With("actor", "authz-pool")}
}

func (p *authzPool) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		// Once per engine: a restart of the pool (after a panic) keeps the
		// workers, and the calls they are making still count.
		p.e.authzWorkers.Do(func() {
			w := &authzWorker{e: p.e}
			self, root := ctx.Self(), p.e.system.Root
			for range p.e.cfg.AuthzConcurrency {
				go func() {
					for c := range p.e.calls {
						root.Send(c.replyTo, w.call(c.msg))
						root.Send(self, &workerIdle{})
					}
				}()
			}
		})
		p.idle = p.e.cfg.AuthzConcurrency - p.e.authzBusy
	case *Authorize:
		p.waiting = append(p.waiting, waitingCall{msg: msg, replyTo: ctx.Sender()})
		p.dispatch(ctx)
	case *workerIdle:
		p.idle++
		p.e.authzBusy--
		p.dispatch(ctx)
	case *actor.Stopping, *actor.Stopped, *actor.Restarting, *actor.Terminated:
	default:
		p.log.Debug("unexpected message", "type", typeName(msg))
	}
}

// dispatch hands waiting calls to idle workers, oldest first, and answers
// at once those whose deadline has passed.
func (p *authzPool) dispatch(ctx actor.Context) {
	now := p.e.cfg.now()
	for len(p.waiting) > 0 && p.idle > 0 {
		w := p.waiting[0]
		p.waiting[0] = waitingCall{}
		p.waiting = p.waiting[1:]
		if !now.Before(w.msg.Deadline) {
			ctx.Send(w.replyTo, &AuthzAnswered{Err: errDeadlinePassed})
			continue
		}
		p.idle--
		p.e.authzBusy++
		p.e.calls <- w
	}
	if len(p.waiting) == 0 {
		p.waiting = nil // let the backing array go after a burst
	}
}

// shortCallError is a call that ran out its request's deadline after it
// began with less than half the decision timeout left: a request that
// waited in a backlog (a burst draining from disk) gives its call only
// what is left of its time, and a healthy service that answers in
// 100 ms still misses a deadline 10 ms away. The breaker counts it
// neither way (excludedFromBreaker): five such calls in a row while a
// backlog drains would otherwise open it and hold back the fresh
// requests behind them, which have their whole time. A call that began
// with more than half the time and still timed out counts as a failure.
type shortCallError struct{ err error }

func (e shortCallError) Error() string { return e.err.Error() }
func (e shortCallError) Unwrap() error { return e.err }

// excludedFromBreaker says whether err leaves the breaker's counts alone.
func excludedFromBreaker(err error) bool {
	var short shortCallError
	return errors.As(err, &short)
}

type authzResult struct {
	status session.Status
	reason string
}

// authzWorker makes the calls of the pool's worker goroutines, one at a
// time each: that is what bounds the load on the authorization service.
type authzWorker struct {
	e *Engine
}

func (w *authzWorker) call(msg *Authorize) (answer *AuthzAnswered) {
	defer func() {
		// A panicking AuthorizeFunc must not cost the pool a worker.
		if v := recover(); v != nil {
			answer = &AuthzAnswered{Err: fmt.Errorf("actors: authorize panicked: %v", v)}
		}
	}()
	if !w.e.cfg.now().Before(msg.Deadline) {
		return &AuthzAnswered{Err: errDeadlinePassed}
	}
	// The call gets the request's deadline. The request actor decides
	// unknown then on its own timer; a late answer changes nothing. The
	// HTTP client (authz.Client) lets a call run a grace past the deadline
	// before it cuts it off, so the worker stays taken while the service
	// may still be working on it: cut off at once, the call would go on at
	// the service while the worker took the next one, and a slow service,
	// the one to protect, would see more than AuthzConcurrency calls.
	// The breaker fails calls at once while the service keeps failing, so
	// that waiting requests back off instead of hammering it.
	start := time.Now()
	short := msg.Deadline.Sub(w.e.cfg.now()) < w.e.cfg.DecisionTimeout/2
	res, err := w.e.breaker.Execute(func() (authzResult, error) {
		w.e.authzCalls.Add(1)
		defer w.e.authzCalls.Add(-1)
		status, reason, err := w.e.cfg.Authorize(msg.Deadline, msg.StationID, msg.DriverToken)
		if err != nil && short && !w.e.cfg.now().Before(msg.Deadline) {
			err = shortCallError{err}
		}
		return authzResult{status, reason}, err
	})
	if obs := w.e.cfg.Observe.AuthzCall; obs != nil {
		switch {
		case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
			obs("breaker_open", time.Since(start))
		case err != nil:
			obs("error", time.Since(start))
		default:
			obs("answered", time.Since(start))
		}
	}
	if err != nil {
		return &AuthzAnswered{Err: err}
	}
	return &AuthzAnswered{Status: res.status, Reason: res.reason}
}
