package actors

import (
	"context"
	"log/slog"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
)

// A dead letter is a message sent to an actor that is gone. Most mean a
// bug (a timer that outlived its actor, a message to the wrong PID), so
// the engine watches its EventStream and logs each one at Warn, with its
// type and recipient only (a message may carry a driver token). The few
// that are expected are listed by expectedDeadLetter, each one message
// type to one actor, and logged at Debug. The tests fail on any other
// (startOn in engine_test.go, TestBurstAndShutdownLeaveNothingBehind).
//
// protoactor logs dead letters itself, at Info, unless the message
// implements IgnoreDeadLetterLogging; its logger passes Warn and above
// only, so this is where they show.

// expectedDeadLetter says why dl is expected, or "" if it is not.
func (e *Engine) expectedDeadLetter(dl *actor.DeadLetterEvent) string {
	to := ""
	if dl.PID != nil {
		to = dl.PID.Id
	}
	stopping := e.stopping()
	switch dl.Message.(type) {
	case *AuthzAnswered:
		if e.isRequestActor(to) {
			return "a late answer: its request was decided by its deadline, or stopped"
		}
	case *actor.Stop:
		if stopping && e.isRequestActor(to) {
			return "the supervisor stopped its children, one of which had just stopped by itself"
		}
	case *workerIdle:
		if stopping && to == e.pool.Id {
			return "an authz call ended after the pool stopped"
		}
	case *CallbackAttempted:
		if stopping && to == e.sender.Id {
			return "a callback attempt ended after the grace, when the sender had stopped"
		}
	case *Accepted:
		if stopping && to == e.supervisor.Id {
			return "an accept outlasted the grace; the request waits in the store"
		}
	case *DeliverCallback:
		if stopping && to == e.sender.Id {
			return "a redelivery raced Stop; the callback waits in the store"
		}
	case *rescanCallbacks:
		if stopping && to == e.sender.Id {
			return "a store recovery raced Stop"
		}
	case *resume:
		if stopping && to == e.supervisor.Id {
			return "a store recovery raced Stop"
		}
	}
	return ""
}

// isRequestActor: id is a request actor's (the supervisor's child).
func (e *Engine) isRequestActor(id string) bool {
	sup := e.supervisor.Id
	return len(id) > len(sup)+1 && strings.HasPrefix(id, sup) && id[len(sup)] == '/'
}

// watchDeadLetters logs every dead letter of the engine's actor system.
func (e *Engine) watchDeadLetters() {
	log := e.log.With("component", "actors")
	e.system.EventStream.Subscribe(func(evt any) {
		dl, ok := evt.(*actor.DeadLetterEvent)
		if !ok {
			return
		}
		to := ""
		if dl.PID != nil {
			to = dl.PID.Id
		}
		if why := e.expectedDeadLetter(dl); why != "" {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("dead letter", "type", typeName(dl.Message), "to", to, "why", why)
			}
			return
		}
		log.Warn("unexpected dead letter", "type", typeName(dl.Message), "to", to)
	})
}
