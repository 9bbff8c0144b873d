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
//
// Syncs alone ride on accepts. A group of syncs alone (a decision's, a
// retry outcome's) waits up to linger for an accept before its commit, if
// the last accept came within the linger: an accept that comes meanwhile
// starts the commit at once and carries them in its fsync. Without the
// wait, a node that takes a few hundred requests a second pays an fsync
// for most decisions on top of one for each accept. With the front idle
// (a backlog draining after a burst) nothing waits, and an accept never
// waits for it (a group with an accept in it commits at once).
type committer struct {
	s      *Store
	linger time.Duration // see Config.SyncLinger

	mu        sync.Mutex
	queue     []*pendingWrite // waiting for the next commit
	running   bool            // a goroutine is committing; it takes the queue when done
	lingering *lingering      // the leader's wait for an accept, if it waits
	// lastAccept is when the last accept was queued: a group of syncs
	// alone waits for an accept only if one came within the linger, so
	// that a backlog draining with the front idle is not slowed down.
	lastAccept time.Time

	// batch is reused from group to group, while the db is the one it
	// was made for (a reopen after a failed write replaces the db). Only
	// the caller that leads touches them.
	batch   *pebble.Batch
	batchDB *pebble.DB
}

// lingering is one wait of a leader for an accept. An accept that comes
// during it takes the lead (takenOver) and closes wake.
type lingering struct {
	wake      chan struct{}
	takenOver bool // under committer.mu
}

// pendingWrite is one caller's part of a group: the record to accept, or
// an empty key for a sync alone. Pooled with its buffers.
type pendingWrite struct {
	key, index, value []byte
	// idemKey, if set, is an idempotency key written with the record
	// (AcceptIdempotent): k/<key> -> idemValue, and kt/<at><key>.
	idemKey, idemValue, idemTimeKey []byte
	done                            chan error
}

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
	var now time.Time
	if c.linger > 0 && len(w.key) > 0 {
		now = time.Now() // outside the lock every accept takes
	}
	c.mu.Lock()
	c.queue = append(c.queue, w)
	lead := !c.running
	c.running = true
	if now.After(c.lastAccept) {
		c.lastAccept = now
	}
	if l := c.lingering; l != nil && len(w.key) > 0 {
		// The accept commits the group itself, at once, rather than wait
		// for the lingering leader's goroutine to be woken and run.
		l.takenOver, c.lingering, lead = true, nil, true
		close(l.wake)
	}
	c.mu.Unlock()
	if lead {
		c.lead()
	}
	for {
		err := <-w.done
		if err != errLead {
			return err
		}
		c.lead()
	}
}

// lead commits the next group, after waiting for an accept to carry it if
// it holds syncs alone (the accept then leads instead).
func (c *committer) lead() {
	if c.waitForAccept() {
		c.commitQueue()
	}
}

// waitForAccept waits, while the queue holds no accept and the last
// accept came within c.linger, up to c.linger for one. It returns whether
// the caller still leads: false when an accept took the lead meanwhile.
func (c *committer) waitForAccept() bool {
	if c.linger <= 0 {
		return true
	}
	c.mu.Lock()
	if time.Since(c.lastAccept) > c.linger {
		c.mu.Unlock()
		return true // the front is idle: none is likely to come
	}
	for _, w := range c.queue {
		if len(w.key) > 0 {
			c.mu.Unlock()
			return true
		}
	}
	// Its own wait and timer: once an accept took over, the next leader
	// may linger before this one has woken.
	l := &lingering{wake: make(chan struct{})}
	c.lingering = l
	c.mu.Unlock()
	t := time.NewTimer(c.linger)
	select {
	case <-l.wake:
	case <-t.C:
	}
	t.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if l.takenOver {
		return false
	}
	c.lingering = nil
	return true
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
	c.mu.Unlock()

	err := c.commit(group)

	c.mu.Lock()
	var next *pendingWrite
	if len(c.queue) > 0 {
		next = c.queue[0]
	} else {
		c.running = false
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
