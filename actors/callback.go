package actors

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// callbackSender delivers durable decisions. It keeps a FIFO of callbacks
// due now and at most CallbackConcurrency attempts in flight. Each attempt
// runs on one of the engine's attempt goroutines, which POSTs, stores the
// attempt (a failed outcome waits for its fsync; a delivered or retry one
// does not: see persistence.RecordAttempt) and reports *CallbackAttempted.
// Retries wait on a timer, not in the queue.
//
// The schedule lives in the store: an attempt's count and next time are
// written before the next attempt is planned, so a restart continues it.
//
// Memory is bounded like the supervisor's: the sender holds at most
// CallbackQueueLimit deliveries that are due (queued or in flight).
// Decided requests beyond that stay in the store (overflow mode) and are
// read back from the decided index, oldest first, as deliveries end. When
// callbacks are slower than decisions, the backlog of callbacks waits on
// disk, not in memory. Callbacks waiting on a retry timer are held in
// memory (a timer and a record each) and do not count against the limit,
// so a failing receiver cannot starve healthy ones.
type callbackSender struct {
	e    *Engine
	log  *slog.Logger
	busy int

	// Callbacks due now wait in one FIFO per receiver host; hosts with
	// work and a free slot (fewer than CallbackHostConcurrency in flight)
	// take turns in ready, so one slow receiver cannot take every slot.
	queues   map[string][]session.Record
	ready    []string
	inReady  map[string]bool
	hostBusy map[string]int
	// owned holds the ids being delivered, so that a rescan of the store
	// never starts a second delivery of one.
	owned map[string]struct{}

	waiting int // owned callbacks waiting on a retry timer (not counted by the limit)

	overflow  bool   // decided requests wait in the store
	scanAfter string // every waiting id is above it ("" = from the start)
}

func newCallbackSender(e *Engine) *callbackSender {
	return &callbackSender{e: e, log: e.log.With("actor", "callbacks"), owned: make(map[string]struct{}),
		queues: make(map[string][]session.Record), inReady: make(map[string]bool), hostBusy: make(map[string]int)}
}

func (c *callbackSender) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *DeliverCallback:
		id := msg.Record.ID
		if _, ok := c.owned[id]; ok {
			return // already being delivered
		}
		if c.active() >= c.e.cfg.CallbackQueueLimit {
			// It stays decided in the store; a refill reads it back.
			if b := before(id); !c.overflow || b < c.scanAfter {
				c.scanAfter = b
			}
			c.overflow = true
			return
		}
		c.own(ctx, msg.Record)
	case *rescanCallbacks:
		c.overflow, c.scanAfter = true, ""
		c.refill(ctx)
	case *callbackDue:
		c.waiting--
		c.enqueue(msg.Record)
		c.run(ctx)
	case *CallbackAttempted:
		c.busy--
		c.e.callbacksBusy.Add(-1)
		h := hostOf(msg.Record.CallbackURL)
		if c.hostBusy[h]--; c.hostBusy[h] <= 0 {
			delete(c.hostBusy, h)
		}
		c.markReady(h)
		c.done(ctx, msg)
		c.run(ctx)
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
	default:
		c.log.Debug("unexpected message", "type", typeName(msg))
	}
}

// active is the number of owned callbacks due now: queued or in flight.
// Those waiting on a retry timer do not count, so that a failing receiver's
// retries cannot take every slot from healthy receivers.
func (c *callbackSender) active() int { return len(c.owned) - c.waiting }

func (c *callbackSender) own(ctx actor.Context, rec session.Record) {
	c.owned[rec.ID] = struct{}{}
	c.e.pendingCB.Store(int64(len(c.owned)))
	c.schedule(ctx, rec)
}

// refill reads waiting decided requests back from the store, oldest first,
// until the sender owns CallbackQueueLimit; it leaves overflow mode when
// the store has no more.
func (c *callbackSender) refill(ctx actor.Context) {
	if c.e.stopping() {
		return
	}
	for free := c.e.cfg.CallbackQueueLimit - c.active(); free > 0; free = c.e.cfg.CallbackQueueLimit - c.active() {
		limit, seen, more := free+1, 0, false
		var batch []session.Record
		err := c.e.cfg.Store.Scan(session.StateDecided, c.scanAfter, limit, func(rec session.Record) bool {
			seen++
			if _, ok := c.owned[rec.ID]; ok {
				return true
			}
			if len(batch) >= free {
				more = true
				return false
			}
			batch = append(batch, rec)
			return true
		})
		if err == nil && len(batch) > 0 {
			// Pebble shows a write before its fsync ends: a decision read
			// here may not be durable yet. One synced WAL write makes
			// everything read so far durable before any callback leaves.
			err = c.e.cfg.Store.SyncWAL()
		}
		if err != nil {
			if !errors.Is(err, persistence.ErrClosing) {
				c.log.Error("reading waiting callbacks from the store", "err", err)
			}
			return
		}
		for _, rec := range batch {
			c.own(ctx, rec)
			c.scanAfter = rec.ID
		}
		if more {
			return
		}
		if seen < limit {
			c.overflow, c.scanAfter = false, ""
			return
		}
		// A full page of owned or admitted records: read on if room is left.
		if len(batch) == 0 {
			return // every record seen is owned already: nothing to gain now
		}
	}
}

// schedule queues rec now, or at its NextAttemptAt.
func (c *callbackSender) schedule(ctx actor.Context, rec session.Record) {
	if wait := rec.NextAttemptAt.Sub(c.e.cfg.now()); wait > 0 {
		self, root := ctx.Self(), c.e.system.Root
		c.waiting++
		time.AfterFunc(wait, func() { root.Send(self, &callbackDue{Record: rec}) })
		return
	}
	c.enqueue(rec)
	c.run(ctx)
}

func (c *callbackSender) enqueue(rec session.Record) {
	h := hostOf(rec.CallbackURL)
	c.queues[h] = append(c.queues[h], rec)
	c.markReady(h)
}

// markReady gives host h a turn if it has work and a free slot.
func (c *callbackSender) markReady(h string) {
	if !c.inReady[h] && len(c.queues[h]) > 0 && c.hostBusy[h] < c.e.cfg.CallbackHostConcurrency {
		c.inReady[h] = true
		c.ready = append(c.ready, h)
	}
}

// run starts attempts while there is room, one host after the other.
func (c *callbackSender) run(ctx actor.Context) {
	for len(c.ready) > 0 && c.busy < c.e.cfg.CallbackConcurrency {
		h := c.ready[0]
		c.ready = c.ready[1:]
		delete(c.inReady, h)
		q := c.queues[h]
		rec := q[0]
		q[0] = session.Record{}
		if q = q[1:]; len(q) == 0 {
			delete(c.queues, h)
		} else {
			c.queues[h] = q
		}
		c.hostBusy[h]++
		c.markReady(h) // back of the line, if it still has work and room
		c.busy++
		c.e.callbacksBusy.Add(1)
		self, root := ctx.Self(), c.e.system.Root
		c.submit(func() { root.Send(self, c.attempt(rec)) })
	}
	if len(c.ready) == 0 {
		c.ready = nil
	}
}

// submit runs an attempt on one of up to CallbackConcurrency long-lived
// goroutines, started as needed. A goroutine per attempt spent about 3% of
// the service's CPU growing its stack (fasthttp's client and Pebble's commit
// run deep); these keep theirs. busy bounds the attempts in flight to
// CallbackConcurrency, the channel's capacity, so the send never blocks.
func (c *callbackSender) submit(attempt func()) {
	if c.e.attemptWorkers < c.busy {
		c.e.attemptWorkers++
		go func() {
			for attempt := range c.e.attempts {
				attempt()
			}
		}()
	}
	c.e.attempts <- attempt
}

// roundStart is when the current round of attempts began: the decision, or
// the operator's last redelivery. --callback-max-age counts from it.
func roundStart(rec session.Record) time.Time {
	if rec.RedeliveredAt.After(rec.DecidedAt) {
		return rec.RedeliveredAt
	}
	return rec.DecidedAt
}

// hostOf is the receiver a callback URL names (lowercased host:port).
func hostOf(callbackURL string) string {
	u, err := url.Parse(callbackURL)
	if err != nil {
		return callbackURL
	}
	return strings.ToLower(u.Host)
}

// attempt POSTs once and stores the outcome. It runs in its own goroutine.
func (c *callbackSender) attempt(rec session.Record) *CallbackAttempted {
	cfg := &c.e.cfg
	start := cfg.now()
	res := cfg.Deliver(start.Add(cfg.CallbackTimeout), rec.ID, rec.Request, rec.Status)
	at := cfg.now().UTC()

	a := persistence.Attempt{At: at, Outcome: session.StateDelivered, StatusCode: res.StatusCode, Took: at.Sub(start)}
	if res.Err != nil {
		a.Err = res.Err.Error()
		n := rec.CallbackAttempts + 1 // attempts made, this one included
		delay := max(callbackDelay(cfg.CallbackBackoff, cfg.CallbackMaxBackoff, n), min(res.RetryAfter, cfg.CallbackMaxBackoff))
		switch {
		case !res.Retryable, n >= cfg.CallbackMaxAttempts:
			a.Outcome = session.StateFailed
		case at.Add(delay).Sub(roundStart(rec)) > cfg.CallbackMaxAge:
			a.Outcome = session.StateFailed
			a.Err += " (giving up: callback max age reached)"
		default:
			a.Outcome = session.StateDecided
			a.NextAt = at.Add(delay)
		}
	}
	stored, err := cfg.Store.RecordAttempt(rec.ID, a)
	if err != nil {
		return &CallbackAttempted{Record: rec, Err: err}
	}
	// A delivery is the common case: one line per request is too many at
	// info.
	result, level, msg := "retry", slog.LevelInfo, "callback attempt failed"
	switch a.Outcome {
	case session.StateDelivered:
		result, level, msg = "delivered", slog.LevelDebug, "callback delivered"
	case session.StateFailed:
		result, level, msg = "failed", slog.LevelWarn, "callback failed for good"
	}
	if obs := cfg.Observe.CallbackAttempt; obs != nil {
		obs(result, at.Sub(start))
	}
	if ctx := context.Background(); c.log.Enabled(ctx, level) {
		attrs := []slog.Attr{slog.String("request_id", rec.ID), slog.Int("attempt", stored.CallbackAttempts),
			slog.String("took", at.Sub(start).String())}
		if a.Err != "" {
			attrs = append(attrs, slog.String("err", a.Err))
		}
		if a.Outcome == session.StateDecided {
			attrs = append(attrs, slog.Time("next_attempt_at", a.NextAt))
		}
		c.log.LogAttrs(ctx, level, msg, attrs...)
	}
	return &CallbackAttempted{Record: stored}
}

func (c *callbackSender) done(ctx actor.Context, msg *CallbackAttempted) {
	switch {
	case msg.Err != nil:
		// The attempt is not stored (closing, a failed write): the record
		// is still decided in the store, and the next start, or the rescan
		// after the store recovers, delivers it.
		if !errors.Is(msg.Err, persistence.ErrClosing) {
			c.log.Error("store callback attempt", "request_id", msg.Record.ID, "err", msg.Err)
		}
		delete(c.owned, msg.Record.ID)
	case msg.Record.State == session.StateDecided:
		c.schedule(ctx, msg.Record) // waits for NextAttemptAt
	default:
		delete(c.owned, msg.Record.ID)
	}
	c.e.pendingCB.Store(int64(len(c.owned)))
	// Refill in batches (a tenth of the limit), not one read per delivery.
	if c.overflow && c.active() <= c.e.cfg.CallbackQueueLimit-max(1, c.e.cfg.CallbackQueueLimit/10) {
		c.refill(ctx)
	}
}
