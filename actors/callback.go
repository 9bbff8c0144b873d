package actors

import (
	"errors"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// callbackSender delivers durable decisions. It wires three small parts to
// the store and the HTTP client: schedule.Policy says after each attempt
// when the next is due or that the callback failed (attempt.go POSTs once,
// asks it, stores the outcome); a hostQueue hands due callbacks out in
// turns per receiver host; and the store's due index (ScanDueExcept), where
// every decided record has an entry at its NextAttemptAt, is where the
// sender finds work, besides the DeliverCallback of a fresh decision or a
// redelivery.
//
// The sender owns the callbacks it took, queued or in flight: at most
// CallbackQueueLimit, so memory is bounded under any burst. A callback
// waiting for a retry is not owned: it waits in the store (its attempt is
// stored with its fsync), and one wake timer, armed for the earliest,
// sends the sender back to the index.
//
// Invariant: every decided record in the store that the sender does not
// own is due and more is set, or is not due and the wake is armed no later
// than its NextAttemptAt (or the end of the gap after the last wake), or
// its DeliverCallback is on its way. Each step keeps it:
//
//   - refill reads the index from its start, passing over what the sender
//     owns, takes what is due up to the limit, clears more only if it took
//     all, and arms the wake for the first entry not due. No cursor: no
//     record can be left behind one.
//   - A DeliverCallback with no room sets more.
//   - An outcome lets the id go: a retry arms the wake for its time (or
//     sets more if due already); a store error sets more.
//   - A DeliverCallback for an owned id (a Redeliver landing between a
//     failed outcome's write and its *CallbackAttempted, or a late
//     decision's) marks the id: letting it go sets more, and a refill
//     reads the record again.
//
// Owning keeps a refill from starting a second delivery of an id; an
// attempt follows the stored record, not the owned copy, so a late
// DeliverCallback never sends twice, nor early. While the store is broken,
// refills fail; the rescan after its recovery (or the next start) reads.
type callbackSender struct {
	e     *Engine
	log   *slog.Logger
	queue *hostQueue[session.Record]
	busy  int             // attempts in flight: at most CallbackConcurrency
	owned map[string]bool // ids queued or in flight; true: a DeliverCallback came meanwhile
	more  bool            // due callbacks may wait in the store, not owned
	wake  wakeTimer       // armed for the earliest callback waiting in the store
}

func newCallbackSender(e *Engine) *callbackSender {
	return &callbackSender{e: e, log: e.log.With("actor", "callbacks"), owned: make(map[string]bool),
		queue: newHostQueue[session.Record](e.cfg.CallbackHostConcurrency),
		wake:  wakeTimer{gap: min(e.cfg.CallbackSchedule.Shortest(), maxWakeGap)}}
}

func (c *callbackSender) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *DeliverCallback:
		switch {
		case c.isOwned(msg.Record.ID):
			c.owned[msg.Record.ID] = true // read again once let go
		case len(c.owned) >= c.e.cfg.CallbackQueueLimit:
			c.more = true // it stays decided in the store
		default:
			c.own(msg.Record)
			c.run(ctx)
		}
	case *rescanCallbacks:
		c.more = true
		c.refill(ctx)
	case *CallbackAttempted:
		c.busy--
		c.e.callbacksBusy.Add(-1)
		c.queue.Done(hostOf(msg.Record.CallbackURL))
		c.done(ctx, msg)
		c.run(ctx)
	case *wakeCallbacks:
		if c.wake.fired(msg.gen, c.e.cfg.now()) { // else it was re-armed since
			c.more = true
			c.refill(ctx)
		}
	case *actor.Stopping, *actor.Restarting: // a restart arms a fresh wake
		c.wake.stop()
	case *actor.Started, *actor.Stopped:
	default:
		c.log.Debug("unexpected message", "type", typeName(msg))
	}
}

func (c *callbackSender) isOwned(id string) bool {
	_, ok := c.owned[id]
	return ok
}

func (c *callbackSender) own(rec session.Record) {
	c.owned[rec.ID] = false
	c.e.pendingCB.Store(int64(len(c.owned)))
	c.queue.Push(hostOf(rec.CallbackURL), rec)
}

// letGo ends the sender's hold on id; a DeliverCallback that came meanwhile
// has a refill read the record again.
func (c *callbackSender) letGo(id string) {
	if c.owned[id] {
		c.more = true
	}
	delete(c.owned, id)
	c.e.pendingCB.Store(int64(len(c.owned)))
}

// refill takes the due callbacks the store holds and the sender does not
// own, earliest due first, up to CallbackQueueLimit owned, and arms the
// wake for the first that is not due.
func (c *callbackSender) refill(ctx actor.Context) {
	free := c.e.cfg.CallbackQueueLimit - len(c.owned)
	if !c.more || free <= 0 || c.e.stopping() {
		return
	}
	var batch []session.Record
	next, err := c.e.cfg.Store.ScanDueExcept(c.isOwned, c.e.cfg.now(), free+1, func(rec session.Record) bool {
		batch = append(batch, rec)
		return true
	})
	if err == nil && len(batch) > 0 {
		// Pebble shows a write before its fsync ends: a decision read here
		// may not be durable yet. One synced WAL write makes everything
		// read so far durable before any callback leaves.
		err = c.e.cfg.Store.SyncWAL()
	}
	if err != nil {
		if !errors.Is(err, persistence.ErrClosing) && !errors.Is(err, persistence.ErrUnavailable) {
			c.log.Error("reading waiting callbacks from the store", "err", err)
		}
		return
	}
	if c.more = len(batch) > free; c.more {
		batch = batch[:free]
	}
	for _, rec := range batch {
		c.own(rec)
	}
	if !next.IsZero() {
		c.wakeBy(ctx, next)
	}
	c.run(ctx)
}

// wakeBy arms the wake for t, unless it is armed for earlier already.
func (c *callbackSender) wakeBy(ctx actor.Context, t time.Time) {
	c.wake.by(t, c.e.cfg.now(), c.e.system.Root, ctx.Self())
}

// run starts attempts while there is room, one host after the other.
func (c *callbackSender) run(ctx actor.Context) {
	for c.busy < c.e.cfg.CallbackConcurrency {
		_, rec, ok := c.queue.Pop()
		if !ok {
			return
		}
		c.busy++
		c.e.callbacksBusy.Add(1)
		self, root := ctx.Self(), c.e.system.Root
		c.submit(func() { root.Send(self, c.attempt(rec)) })
	}
}

func (c *callbackSender) done(ctx actor.Context, msg *CallbackAttempted) {
	c.letGo(msg.Record.ID)
	switch {
	case msg.Err != nil:
		// The attempt is not stored (closing, a failed read or write): the
		// record is as it was in the store, for a refill to read again. If
		// the store is broken, the rescan after it recovers does it, and
		// after a close the next start does.
		if !errors.Is(msg.Err, persistence.ErrClosing) && !errors.Is(msg.Err, persistence.ErrUnavailable) {
			c.log.Error("store callback attempt", "request_id", msg.Record.ID, "err", msg.Err)
		}
		c.more = true
	case msg.Record.State != session.StateDecided:
	case msg.Record.NextAttemptAt.After(c.e.cfg.now()):
		c.wakeBy(ctx, msg.Record.NextAttemptAt) // it waits in the store
	default:
		c.more = true
	}
	// Refill in batches (a tenth of the limit), not one read per delivery.
	if limit := c.e.cfg.CallbackQueueLimit; len(c.owned) <= limit-max(1, limit/10) {
		c.refill(ctx)
	}
}
