package persistence

import (
	"errors"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// A committer is a group commit in front of Pebble: the writes that must be
// durable (accepts, and syncs of transitions already applied) queue up
// while one synced commit is in flight, and the next commit takes all of
// them in one batch and one fsync.
//
// Pebble's own pipeline also shares an fsync among concurrent commits, but
// every commit is published in sequence order: one committer goroutine that
// the scheduler leaves waiting holds up every commit after it, and with a
// few hundred committing goroutines on two cores that convoy, not the
// fsync, made up most of an accept's latency. Here one goroutine commits, and
// the callers only wait.
type committer struct {
	s *Store

	mu      sync.Mutex
	queue   []*pendingWrite // waiting for the next commit
	running bool            // a goroutine is committing; it takes the queue when done
	eager   int             // writes in queue that are not lazy: one of them leads the next group

	// lazyWindow is how long a lazy write waits for a group that another
	// write starts before it starts one itself (lazySyncWindow; tests
	// lengthen it).
	lazyWindow time.Duration

	// batch is reused from group to group, while the db is the one it
	// was made for (a reopen after a failed write replaces the db). Only
	// the caller that leads touches them.
	batch   *pebble.Batch
	batchDB *pebble.DB
}

// pendingWrite is one caller's part of a group: the record to accept, or
// an empty key for a sync alone. Pooled with its buffers.
type pendingWrite struct {
	key, index, value []byte
	// idemKey, if set, is an idempotency key written with the record
	// (AcceptIdempotent): k/<key> -> idemValue, and kt/<at><key>.
	idemKey, idemValue, idemTimeKey []byte
	done                            chan error
	// lazy: a sync alone that does not start a group of its own at once
	// (see lazySyncWindow). queued: it is in the queue, not yet taken by
	// a group. Both under committer.mu.
	lazy, queued bool
}

// lazySyncWindow is how long the sync of a transition (a decision, a
// callback outcome) waits for a group commit started by an accept before
// it starts one itself. Under load an accept comes well within it and the
// transition's sync costs no fsync of its own: at 3000 requests a second
// the decisions' fsyncs, half of the fsyncs, went. Only the transition
// waits (an acknowledgment never does), and only when no accept comes.
const lazySyncWindow = 2 * time.Millisecond

var pendingWrites = sync.Pool{New: func() any { return &pendingWrite{done: make(chan error, 1)} }}

// write queues w and waits for the group commit that takes it. The caller
// holds the store's read lock, so the db cannot be closed or swapped while
// the group is committed.
//
// There is no committer goroutine: the first caller to find none running
// commits the queue (its own write included), then hands the lead to the
// first caller that queued meanwhile, so that no caller commits for others
// for longer than one group.
func (c *committer) write(w *pendingWrite) error {
	c.mu.Lock()
	c.queue = append(c.queue, w)
	w.queued = true
	if !w.lazy {
		c.eager++
	}
	lead := !c.running && !w.lazy
	if lead {
		c.running = true
	}
	c.mu.Unlock()
	if lead {
		c.commitQueue()
	}
	var window <-chan time.Time
	if w.lazy && !lead {
		t := time.NewTimer(cmpDuration(c.lazyWindow, lazySyncWindow))
		defer t.Stop()
		window = t.C
	}
	for {
		select {
		case err := <-w.done:
			if err != errLead {
				return err
			}
			c.commitQueue()
		case <-window:
			// No group took it in time: lead one, or, if one is being
			// committed, have the next group led even without an accept.
			window = nil
			c.mu.Lock()
			lead := false
			if w.queued {
				if !c.running {
					c.running, lead = true, true
				} else if w.lazy {
					w.lazy = false
					c.eager++
				}
			}
			c.mu.Unlock()
			if lead {
				c.commitQueue()
			}
		}
	}
}

// cmpDuration is d, or def if d is 0.
func cmpDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// errLead, sent on a pendingWrite's done, tells its caller to commit the
// next group. It never reaches a caller of write.
var errLead = errors.New("persistence: lead the next group commit")

// commitQueue commits the queued writes as one group, tells each its
// result, and passes the lead on.
func (c *committer) commitQueue() {
	c.mu.Lock()
	group := c.queue
	c.queue = nil
	c.eager = 0
	for _, w := range group {
		w.queued = false
	}
	c.mu.Unlock()

	err := c.commit(group)

	c.mu.Lock()
	var next *pendingWrite
	if c.eager > 0 {
		next = c.queue[0] // any writer leads the whole queue
	} else {
		c.running = false // lazy writes alone wait for an accept or their window
	}
	c.mu.Unlock()
	for _, w := range group {
		w.done <- err
	}
	if next != nil {
		next.done <- errLead
	}
}

// commit writes group in one batch with pebble.Sync.
func (c *committer) commit(group []*pendingWrite) error {
	if c.batch == nil || c.batchDB != c.s.db {
		c.batch, c.batchDB = c.s.db.NewBatch(), c.s.db
	}
	b := c.batch
	defer b.Reset()
	for _, w := range group {
		if len(w.key) == 0 {
			continue // a sync alone
		}
		if err := b.Set(w.key, w.value, nil); err != nil {
			return err
		}
		if err := b.Set(w.index, nil, nil); err != nil {
			return err
		}
		if len(w.idemKey) > 0 {
			if err := b.Set(w.idemKey, w.idemValue, nil); err != nil {
				return err
			}
			if err := b.Set(w.idemTimeKey, nil, nil); err != nil {
				return err
			}
		}
	}
	if b.Empty() {
		return c.s.guard(func() error { return c.s.db.LogData(nil, pebble.Sync) })
	}
	err := c.s.commit(b, pebble.Sync)
	if err != nil {
		// A failed commit's batch cannot be reused; nor may the next
		// group use a batch of a db that the reopen replaces.
		c.batch = nil
	}
	return err
}
