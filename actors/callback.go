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
// attempt (a failed or retry outcome waits for its fsync; a delivered one
// does not: see persistence.RecordAttempt) and reports *CallbackAttempted.
// Retries wait on a timer, not in the queue.
//
// The schedule lives in the store: an attempt's count and next time are
// written before the next attempt is planned, so a restart continues it.
//
// Memory is bounded under any burst: the sender owns at most
// 2×CallbackQueueLimit callbacks. It takes a callback that is due (to queue
// it or send it) only while fewer than CallbackQueueLimit are due, and it
// holds at most CallbackQueueLimit on a retry timer (a timer and a record
// each). The two budgets are separate, so a failing receiver's retries,
// while they wait for their time, cannot take the slots of healthy
// receivers (once due, they take due slots like any callback, oldest
// first).
//
// The sender reads the store through its due index (persistence.ScanDue:
// decided records by NextAttemptAt, earliest first), from a cursor. The
// cursor moves forward as refills read, goes back before a record the
// sender leaves in the store (see leave), and back to the start on a
// rescan (start, store recovery) or an attempt that could not be stored:
//
//   - Decided requests beyond the due budget stay in the store (overflow
//     mode) and are read back, earliest due first, as deliveries end. When
//     callbacks are slower than decisions, the backlog waits on disk, not
//     in memory.
//   - A retry beyond the waiting budget is released: the attempt has just
//     stored it as decided with its NextAttemptAt, which is later than any
//     entry the cursor has passed (else, the clock stepped back, the cursor
//     goes back before it), so the sender forgets it and arms one wake
//     timer (one for all of them) at the earliest such time. A scan
//     reads only what is due and stops at the first entry that is not,
//     whose time arms the wake: records not due are never read, however
//     many wait. A released retry is thus attempted no earlier than its
//     NextAttemptAt, and at most min(CallbackBackoff, 1s) later when there
//     is room (the wakes are at least that far apart).
//
// Invariant: every decided request in the store that the sender does not
// own is after the cursor, and either overflow is set, or it is not due
// yet and the wake timer is armed for no later than its NextAttemptAt (or
// the end of the gap after the last wake). (While the store is broken, refills
// fail and the rescan after its recovery starts again; after a close,
// the next start does.) The owned set keeps a scan from starting a second
// delivery of an id.
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
	// redo holds, for an owned id, the record of a DeliverCallback that
	// came meanwhile: a late decision's, or a Redeliver's that raced the
	// failed outcome. Only the latter matters: when a failed outcome lets
	// the id go, the record is left for a refill (see disown).
	redo map[string]session.Record

	waiting int // owned callbacks waiting on a retry timer: at most CallbackQueueLimit

	overflow  bool               // due requests may wait in the store, after the cursor
	cursor    persistence.DuePos // every request the sender does not own is after it
	readingOn bool               // a *readOnCallbacks is in the mailbox

	// The wake timer, for released retries (see above).
	wakeAt    time.Time // when the armed timer fires (zero: none armed)
	wakeTimer *time.Timer
	wakeGen   uint64    // the armed timer's number: a stopped timer's late message is ignored
	lastWake  time.Time // when the last wake came
}

// refillSkipBudget is how many owned records one refill passes over before
// it lets the mailbox in and reads on, so that a scan never holds the
// sender for long.
const refillSkipBudget = 4096

// refillSkipPage is how many more records than free+1 a refill asks for
// in one scan after it has passed over some (the store's scan page).
const refillSkipPage = 256

// maxWakeGap caps the least time between two wakes (CallbackBackoff, if
// shorter), so that retries falling due one by one are taken in batches.
const maxWakeGap = time.Second

func newCallbackSender(e *Engine) *callbackSender {
	return &callbackSender{e: e, log: e.log.With("actor", "callbacks"),
		owned: make(map[string]struct{}), redo: make(map[string]session.Record),
		queues: make(map[string][]session.Record), inReady: make(map[string]bool), hostBusy: make(map[string]int)}
}

func (c *callbackSender) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *DeliverCallback:
		if _, ok := c.owned[msg.Record.ID]; ok {
			// Being delivered already, from an older state maybe: a
			// Redeliver can land between a failed outcome's write and
			// its *CallbackAttempted, which then lets the id go. Kept
			// until then (the earliest, if several come).
			if r, ok := c.redo[msg.Record.ID]; !ok || persistence.DuePosBefore(msg.Record).Before(persistence.DuePosBefore(r)) {
				c.redo[msg.Record.ID] = msg.Record
			}
			return
		}
		if c.active() >= c.e.cfg.CallbackQueueLimit {
			c.leave(msg.Record) // it stays decided in the store
			return
		}
		c.own(ctx, msg.Record)
	case *rescanCallbacks:
		c.overflow, c.cursor = true, persistence.DuePos{}
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
	case *wakeCallbacks:
		if msg.gen != c.wakeGen || c.wakeAt.IsZero() {
			return // a timer stopped too late: a newer one is armed
		}
		c.wakeAt, c.wakeTimer, c.lastWake = time.Time{}, nil, c.e.cfg.now()
		c.overflow = true
		c.refill(ctx)
	case *readOnCallbacks:
		c.readingOn = false
		if c.overflow {
			c.refill(ctx)
		}
	case *actor.Stopping:
		if c.wakeTimer != nil {
			c.wakeTimer.Stop()
		}
	case *actor.Started, *actor.Stopped, *actor.Restarting:
	default:
		c.log.Debug("unexpected message", "type", typeName(msg))
	}
}

// leave makes sure a refill reads rec back from the store: the sender does
// not take it now. The cursor goes back before it, if it had passed it.
func (c *callbackSender) leave(rec session.Record) {
	c.rewind(rec)
	c.overflow = true
}

// disown lets id go: the sender no longer delivers it. After a failed
// outcome, a record that a DeliverCallback brought meanwhile (see redo) is
// left for a refill: a Redeliver may have made it decided again, and a
// refill may have passed over it while the id was owned. (Only a failed
// record can be redelivered; after an error, the cursor goes back to the
// start anyway.)
func (c *callbackSender) disown(id string, failed bool) {
	delete(c.owned, id)
	if r, ok := c.redo[id]; ok {
		delete(c.redo, id)
		if failed {
			c.leave(r)
		}
	}
}

// rewind moves the cursor back before rec, if it had passed it. A record
// goes behind the cursor if a refill passed its time before it was written
// (its decision time was taken before a later one's write, or the wall
// clock stepped back), or passed over it while its id was owned.
func (c *callbackSender) rewind(rec session.Record) {
	if p := persistence.DuePosBefore(rec); p.Before(c.cursor) {
		c.cursor = p
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

// refill reads the due index from the cursor and takes the records that
// are due, earliest first, until the sender has CallbackQueueLimit due; it
// passes over records it owns. It stops at the first record not due yet,
// and arms the wake for its time, or at the end of the index: then nothing
// due waits in the store, and it leaves overflow mode. It reads only what
// it takes, plus one record to see whether more are left, as long as it
// meets none to pass over.
func (c *callbackSender) refill(ctx actor.Context) {
	if c.e.stopping() {
		return
	}
	now := c.e.cfg.now()
	skipped, extra := 0, 0
	for free := c.e.cfg.CallbackQueueLimit - c.active(); free > 0; free = c.e.cfg.CallbackQueueLimit - c.active() {
		if skipped >= refillSkipBudget {
			c.readOn(ctx)
			return
		}
		limit, seen, more, cursor := free+1+extra, 0, false, c.cursor
		var batch []session.Record
		next, err := c.e.cfg.Store.ScanDue(c.cursor, now, limit, func(p persistence.DuePos, rec session.Record) bool {
			seen++
			if len(batch) >= free {
				more = true
				return false
			}
			cursor = p
			if _, ok := c.owned[rec.ID]; ok {
				skipped++
				return true
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
			if !errors.Is(err, persistence.ErrClosing) && !errors.Is(err, persistence.ErrUnavailable) {
				c.log.Error("reading waiting callbacks from the store", "err", err)
			}
			return
		}
		c.cursor = cursor
		for _, rec := range batch {
			c.own(ctx, rec)
		}
		if more {
			return
		}
		if seen < limit {
			// Nothing after the cursor is due: the index ended, or its next
			// record is due later, and the wake is set for it.
			c.overflow = false
			if !next.IsZero() {
				c.wakeBy(ctx, next)
			}
			return
		}
		// A full page with room left: read on, a store page at a time once
		// records are being passed over.
		if skipped > 0 {
			extra = refillSkipPage
		}
	}
}

// readOn lets the messages waiting in the mailbox in before the refill
// reads on.
func (c *callbackSender) readOn(ctx actor.Context) {
	if !c.readingOn {
		c.readingOn = true
		ctx.Send(ctx.Self(), &readOnCallbacks{})
	}
}

// wakeBy arms the wake timer for t, or for the end of the gap after the
// last wake, unless it is armed for earlier already.
func (c *callbackSender) wakeBy(ctx actor.Context, t time.Time) {
	if gapEnd := c.lastWake.Add(min(c.e.cfg.CallbackBackoff, maxWakeGap)); t.Before(gapEnd) {
		t = gapEnd
	}
	if !c.wakeAt.IsZero() && !t.Before(c.wakeAt) {
		return
	}
	if c.wakeTimer != nil {
		c.wakeTimer.Stop()
	}
	c.wakeGen++
	gen, self, root := c.wakeGen, ctx.Self(), c.e.system.Root
	c.wakeAt = t
	c.wakeTimer = time.AfterFunc(t.Sub(c.e.cfg.now()), func() { root.Send(self, &wakeCallbacks{gen: gen}) })
}

// schedule queues rec now, or has it wait for its NextAttemptAt: on a
// timer while fewer than CallbackQueueLimit wait so, else in the store.
func (c *callbackSender) schedule(ctx actor.Context, rec session.Record) {
	if wait := rec.NextAttemptAt.Sub(c.e.cfg.now()); wait > 0 {
		if c.waiting >= c.e.cfg.CallbackQueueLimit {
			// The store has it, decided, with this NextAttemptAt (the
			// attempt that planned it is stored): a wake takes it back.
			c.disown(rec.ID, false)
			c.e.pendingCB.Store(int64(len(c.owned)))
			c.e.releasedCB.Add(1)
			c.rewind(rec) // only if the clock stepped back
			c.wakeBy(ctx, rec.NextAttemptAt)
			return
		}
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
	// The attempt follows the stored record, not the copy the sender
	// owns: a DeliverCallback that arrives after a refill already took its
	// record (and delivered it, or released it for a retry) carries the
	// first decided copy, with no attempts and a past NextAttemptAt.
	cur, err := cfg.Store.Get(rec.ID)
	if err != nil {
		return &CallbackAttempted{Record: rec, Err: err}
	}
	if cur.State != session.StateDecided || cur.NextAttemptAt.After(cfg.now()) {
		return &CallbackAttempted{Record: cur} // done: nothing to send now
	}
	// Its outcome could not be stored: do not send (a callback whose
	// attempt is not recorded would be sent again and again). The record
	// stays as it is; the rescan after the store recovers takes it back.
	if err := cfg.Store.Writable(); err != nil {
		return &CallbackAttempted{Record: cur, Err: err}
	}
	rec = cur
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
		// The attempt is not stored (closing, a failed read or write):
		// the record is as it was in the store. Read it back from the
		// start (its stored time may be older than the copy here); if the
		// store is broken, the rescan after it recovers does it again, and
		// after a close the next start does.
		if !errors.Is(msg.Err, persistence.ErrClosing) && !errors.Is(msg.Err, persistence.ErrUnavailable) {
			c.log.Error("store callback attempt", "request_id", msg.Record.ID, "err", msg.Err)
		}
		c.disown(msg.Record.ID, false)
		c.overflow, c.cursor = true, persistence.DuePos{}
	case msg.Record.State == session.StateDecided:
		c.schedule(ctx, msg.Record) // waits for NextAttemptAt, on a timer or in the store
	default:
		c.disown(msg.Record.ID, msg.Record.State == session.StateFailed)
	}
	c.e.pendingCB.Store(int64(len(c.owned)))
	// Refill in batches (a tenth of the limit), not one read per delivery.
	if c.overflow && c.active() <= c.e.cfg.CallbackQueueLimit-max(1, c.e.cfg.CallbackQueueLimit/10) {
		c.refill(ctx)
	}
}
