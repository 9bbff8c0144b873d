package persistence

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/chargeauth/chargeauth/session"
)

// commit commits b. A failed commit ends in a panic inside Pebble: either
// Logger.Fatalf (fatalPanic, when the fsync fails) or a panic with the
// error itself (commitWrite, when writing the WAL record fails). commit
// turns both into ErrUnavailable, marks the store broken and starts
// reopening Pebble in the background. Any other panic is re-raised. The
// caller holds the read lock.
func (s *Store) commit(b *pebble.Batch, opts *pebble.WriteOptions) error {
	return s.guard(func() error { return b.Commit(opts) })
}

// syncRLocked makes every write already visible durable: it waits for the
// next group commit (see committer), which syncs the WAL; a failure is
// handled as in commit. The caller holds the read lock.
func (s *Store) syncRLocked() error {
	w := pendingWrites.Get().(*pendingWrite)
	w.key = w.key[:0] // a sync alone; the buffers stay for the next Accept
	err := s.committer.write(w)
	pendingWrites.Put(w)
	return err
}

// guard runs a write to Pebble and turns its failure panics into
// ErrUnavailable (see commit).
func (s *Store) guard(write func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			why := failedWrite(v)
			s.fail(why)
			err = fmt.Errorf("%w: %s", ErrUnavailable, why)
		}
	}()
	return write()
}

// failedWrite says why a commit failed, from the panic Pebble raised for
// it (see commit). Any other panic is raised again.
func failedWrite(v any) string {
	switch v := v.(type) {
	case fatalPanic:
		return string(v)
	case error:
		return "pebble: write failed: " + v.Error()
	}
	panic(v)
}

// fail marks the store broken (once) and starts recoverLoop.
func (s *Store) fail(why string) {
	if s.broken.CompareAndSwap(false, true) {
		s.log.Error("store write failed: refusing writes until Pebble is reopened", "err", why)
		go s.recoverLoop()
	}
}

// recoverLoop closes the broken Pebble and opens it again, every
// recoverEvery, until it succeeds or the store is closed. Pebble replays its
// WAL on open: everything a nil-error write returned for is there; a failed
// commit is not. Then the counts are taken again and the onRecover funcs run.
func (s *Store) recoverLoop() {
	for {
		time.Sleep(s.cfg.recoverEvery)
		s.mu.Lock()
		if s.mu.closed {
			s.mu.Unlock()
			return
		}
		if s.db != nil {
			if err := closeDB(s.db); err != nil {
				s.log.Warn("closing the failed Pebble", "err", err)
			}
			s.db = nil
		}
		db, err := openDB(s.cfg.Dir, s.opts)
		if err != nil {
			s.mu.Unlock()
			s.log.Warn("reopening Pebble failed; retrying", "err", err, "every", s.cfg.recoverEvery.String())
			continue
		}
		s.db = db
		if err := s.deleteFailedAcceptsLocked(); err != nil {
			// Not safe to serve: a 503'd request could be decided and
			// called back. Close and try again.
			s.log.Warn("removing failed accepts after reopen failed; retrying", "err", err)
			_ = closeDB(db)
			s.db = nil
			s.mu.Unlock()
			continue
		}
		if err := s.initCounts(); err != nil {
			s.log.Warn("recounting after reopen failed", "err", err)
		}
		s.broken.Store(false)
		funcs := append([]func(){}, s.mu.onRecover...)
		s.mu.Unlock()
		s.log.Info("store reopened after a failed write: accepting again")
		for _, f := range funcs {
			f()
		}
		return
	}
}

// OnRecover registers f to run after the store has reopened Pebble
// following a failed write: work that failed meanwhile (a decision, a
// callback attempt) is still in the store in its earlier state and should
// be picked up again.
func (s *Store) OnRecover(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.onRecover = append(s.mu.onRecover, f)
}

// closeDB closes db; a panic (Pebble may Fatalf while closing a DB whose
// commit pipeline failed) becomes an error.
func closeDB(db *pebble.DB) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("persistence: close: %v", v)
		}
	}()
	return db.Close()
}

// openDB opens Pebble; a Fatalf during open becomes an error.
func openDB(dir string, opts *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("persistence: open %s: %v", dir, v)
		}
	}()
	return pebble.Open(dir, opts)
}

// forgetOnRecover records that id's Accept failed, so that the reopen
// deletes whatever of it the WAL still holds.
func (s *Store) forgetOnRecover(id string) {
	s.failedMu.Lock()
	s.failedAccepts = append(s.failedAccepts, id)
	s.failedMu.Unlock()
}

// deleteFailedAcceptsLocked deletes, after a reopen, the records of accepts
// that returned an error: a failed fsync fails every commit waiting on it,
// yet their batches may have reached the WAL file and come back on replay.
// A request answered 503 must not be decided or called back. s.mu is held.
func (s *Store) deleteFailedAcceptsLocked() error {
	s.failedMu.Lock()
	ids := s.failedAccepts
	s.failedMu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	var kb [64]byte
	n := 0
	for _, id := range ids {
		r, err := s.getRLocked(s.db, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := b.Delete(recordKey(kb[:0], id), nil); err != nil {
			return err
		}
		if err := b.Delete(indexKey(kb[:0], r.State, id), nil); err != nil {
			return err
		}
		// It may have been decided: Pebble shows a batch before its
		// fsync ends, and a scan of the backlog may have read it.
		if err := moveDue(b, &r, &session.Record{}); err != nil {
			return err
		}
		n++
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	s.failedMu.Lock()
	s.failedAccepts = s.failedAccepts[len(ids):]
	s.failedMu.Unlock()
	if n > 0 {
		s.log.Warn("deleted requests whose accept failed but reached the WAL", "count", n)
	}
	return nil
}
