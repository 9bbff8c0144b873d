package actors

import (
	"errors"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// callbackSender delivers durable decisions. It keeps a FIFO of callbacks
// due now and at most CallbackConcurrency attempts in flight. Each attempt
// runs as a task in its own goroutine, which POSTs, stores the attempt (with
// pebble.Sync, concurrently with other tasks, so their fsyncs are shared)
// and reports *CallbackAttempted. Retries wait on a timer, not in the queue.
//
// The schedule lives in the store: an attempt's count and next time are
// written before the next attempt is planned, so a restart continues it.
type callbackSender struct {
	e     *Engine
	log   *slog.Logger
	queue []session.Record
	busy  int
}

func newCallbackSender(e *Engine) *callbackSender {
	return &callbackSender{e: e, log: e.log.With("actor", "callbacks")}
}

func (c *callbackSender) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *DeliverCallback:
		rec := msg.Record
		if wait := rec.NextAttemptAt.Sub(c.e.cfg.now()); wait > 0 {
			self, root := ctx.Self(), c.e.system.Root
			time.AfterFunc(wait, func() { root.Send(self, &DeliverCallback{Record: rec}) })
			return
		}
		c.queue = append(c.queue, rec)
		c.run(ctx)
	case *CallbackAttempted:
		c.busy--
		c.e.callbacksBusy.Add(-1)
		c.done(ctx, msg)
		c.run(ctx)
	case *getStats:
		ctx.Respond(&Stats{CallbacksQueue: len(c.queue), CallbacksBusy: c.busy})
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
	default:
		c.log.Debug("unexpected message", "type", typeName(msg))
	}
}

// run starts attempts while there is room.
func (c *callbackSender) run(ctx actor.Context) {
	for len(c.queue) > 0 && c.busy < c.e.cfg.CallbackConcurrency {
		rec := c.queue[0]
		c.queue[0] = session.Record{}
		c.queue = c.queue[1:]
		c.busy++
		c.e.callbacksBusy.Add(1)
		self, root := ctx.Self(), c.e.system.Root
		go func() { root.Send(self, c.attempt(rec)) }()
	}
	if len(c.queue) == 0 {
		c.queue = nil
	}
}

// attempt POSTs once and stores the outcome. It runs in its own goroutine.
func (c *callbackSender) attempt(rec session.Record) *CallbackAttempted {
	cfg := &c.e.cfg
	start := cfg.now()
	res := cfg.Deliver(start.Add(cfg.CallbackTimeout), rec.ID, rec.Request, rec.Status)
	at := cfg.now().UTC()

	a := persistence.Attempt{At: at, Outcome: session.StateDelivered}
	if res.Err != nil {
		a.Err = res.Err.Error()
		n := rec.CallbackAttempts + 1 // attempts made, this one included
		if !res.Retryable || n >= cfg.CallbackMaxAttempts {
			a.Outcome = session.StateFailed
		} else {
			a.Outcome = session.StateDecided
			delay := max(retryDelay(cfg.CallbackBackoff, cfg.CallbackMaxBackoff, n), min(res.RetryAfter, cfg.CallbackMaxBackoff))
			a.NextAt = at.Add(delay)
		}
	}
	stored, err := cfg.Store.RecordAttempt(rec.ID, a)
	if err != nil {
		return &CallbackAttempted{Record: rec, Err: err}
	}
	log := c.log.With("request_id", rec.ID, "attempt", stored.CallbackAttempts, "took", at.Sub(start).String())
	switch a.Outcome {
	case session.StateDelivered:
		log.Info("callback delivered")
	case session.StateFailed:
		log.Warn("callback failed for good", "err", a.Err)
	default:
		log.Info("callback attempt failed", "err", a.Err, "next_attempt_at", a.NextAt)
	}
	return &CallbackAttempted{Record: stored}
}

func (c *callbackSender) done(ctx actor.Context, msg *CallbackAttempted) {
	switch {
	case msg.Err != nil:
		// The attempt is not stored (closing, disk full): the record is
		// still decided in the store and the next start delivers it.
		if !errors.Is(msg.Err, persistence.ErrClosing) {
			c.log.Error("store callback attempt", "request_id", msg.Record.ID, "err", msg.Err)
		}
		c.e.pendingCB.Add(-1)
	case msg.Record.State == session.StateDecided:
		ctx.Send(ctx.Self(), &DeliverCallback{Record: msg.Record}) // waits for NextAttemptAt
	default:
		c.e.pendingCB.Add(-1)
	}
}
