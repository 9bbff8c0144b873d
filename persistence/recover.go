package persistence

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chargeauth/chargeauth/session"
)

// commit commits b. A failed commit ends in a panic inside Pebble: either
// Logger.Fatalf (fatalPanic, when the fsync fails) or a panic with the
// error itself (commitWrite, when writing the WAL record fails). commit
// turns both into the fault's error (ErrUnavailable), marks the store
// broken and starts recoverLoop. Any other panic is re-raised. The caller
// holds the read lock.
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

// guard runs a write to Pebble and turns its failure panics into the
// fault's error (see commit). While the store is broken it does not call
// Pebble at all: a commit on a Pebble whose WAL writer failed panics while
// holding the commit pipeline's mutex, and every commit after it would
// wait on that mutex for ever.
func (s *Store) guard(write func() error) (err error) {
	if err := s.brokenErr(); err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			why, cause := failedWrite(v)
			s.fail(cause, why)
			err = s.brokenErr()
		}
	}()
	return write()
}

// failedWrite says why a commit failed, and with which error, from the
// panic Pebble raised for it (see commit). Any other panic is raised again.
func failedWrite(v any) (string, error) {
	switch v := v.(type) {
	case fatalPanic:
		return v.msg, v.err
	case error:
		return "pebble: write failed: " + v.Error(), v
	}
	panic(v)
}

// fail marks the store broken (once per fault): writes are refused at once
// from now on, and recoverLoop starts. err (may be nil) gives the cause.
func (s *Store) fail(err error, why string) {
	if !s.broken.CompareAndSwap(false, true) {
		return
	}
	cause := faultCause(err)
	s.fault.Store(&fault{cause: cause, since: s.cfg.now().UTC(), err: why})
	s.faults.Log(slog.LevelError, "fault", "store write failed: refusing writes until the store recovers",
		"cause", cause, "err", why)
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closing.Load() {
		return
	}
	s.recoverWG.Add(1)
	go s.recoverLoop()
}

// recoverLoop brings a broken store back. First it retires the failed
// Pebble (closing it stops its background work: a flush that fails again
// at once would spin) and opens the directory read-only, so that reads go
// on. Then, with a pause of recoverMin doubling to recoverMax between
// rounds, it probes the filesystem (a small file written, synced and
// removed, and some free space); once the probe passes it reopens Pebble
// read-write. Pebble replays its WAL on open: everything a nil-error write
// returned for is there; a failed commit is not (deleteFailedAccepts). Then
// the counts are taken again and the onRecover funcs run.
//
// No lock is held while it waits, probes or opens: the store's lock is
// taken only with TryLock (see takeDB), so readers never queue behind it.
func (s *Store) recoverLoop() {
	defer s.recoverWG.Done()
	delay := s.cfg.recoverMin
	for {
		if s.recoverRound(delay) {
			return
		}
		select {
		case <-s.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, s.cfg.recoverMax)
	}
}

// recoverRound is one attempt of recoverLoop; it returns true when the
// loop is done (recovered, closing, or the process is exiting).
func (s *Store) recoverRound(delay time.Duration) bool {
	if s.closing.Load() {
		return true
	}
	s.mu.RLock()
	writable := s.db != nil && !s.mu.readOnlyDB
	s.mu.RUnlock()
	if writable {
		db, ok := s.takeDB()
		if !ok {
			return s.closing.Load()
		}
		if err := s.closeWithin(db); err != nil {
			s.fatal("closing the failed Pebble: " + err.Error())
			return true
		}
		s.openReadOnly()
	}
	if err := s.probe(); err != nil {
		s.faults.Log(slog.LevelWarn, "probe", "store still cannot write; retrying",
			"cause", faultCause(err), "err", err.Error(), "retry_in", delay.String())
		return false
	}
	db, ok := s.takeDB()
	if !ok {
		return s.closing.Load()
	}
	if db != nil {
		if err := s.closeWithin(db); err != nil {
			s.fatal("closing the read-only Pebble: " + err.Error())
			return true
		}
	}
	db, err := openDB(s.cfg.Dir, s.opts)
	var counts [numStates]int64
	if err == nil {
		// Not safe to serve if the failed accepts are not deleted: a
		// 503'd request could be decided and called back.
		if err = s.deleteFailedAccepts(db); err == nil {
			counts, err = countStates(db)
		}
		if err != nil {
			_ = s.closeWithin(db)
		}
	}
	if err != nil {
		s.faults.Log(slog.LevelWarn, "reopen", "reopening Pebble failed; retrying",
			"cause", faultCause(err), "err", err.Error(), "retry_in", delay.String())
		s.openReadOnly()
		return false
	}
	s.mu.Lock()
	if s.closing.Load() || s.mu.closed {
		s.mu.Unlock()
		_ = s.closeWithin(db)
		return true
	}
	s.db, s.mu.readOnlyDB = db, false
	for i, n := range counts {
		s.counts[i].Store(n)
	}
	funcs := append([]func(){}, s.mu.onRecover...)
	s.mu.Unlock()
	f := s.fault.Load()
	s.fault.Store(nil)
	s.broken.Store(false)
	args := []any{}
	if f != nil {
		args = append(args, "cause", f.cause, "down_for", s.cfg.now().Sub(f.since).Round(time.Millisecond).String())
	}
	s.log.Info("store recovered: writing again", args...)
	for _, f := range funcs {
		f()
	}
	return true
}

// takeDB takes the open Pebble out of the store (s.db becomes nil: reads
// get ErrUnavailable until the next is installed) so that it can be closed.
// It only tries the lock, for up to 100ms, so that readers never wait for
// it; false means it did not get it. A write stuck inside the failed Pebble
// holds the read lock for ever: after stuckAfter of failed tries, the
// process exits (see fatal).
func (s *Store) takeDB() (*pebble.DB, bool) {
	if !s.lockWithin(100 * time.Millisecond) {
		now := s.cfg.now()
		if s.stuckSince.IsZero() {
			s.stuckSince = now
		} else if now.Sub(s.stuckSince) > s.cfg.stuckAfter {
			s.fatal("a write is stuck inside the failed Pebble")
		}
		return nil, false
	}
	s.stuckSince = time.Time{}
	db := s.db
	s.db, s.mu.readOnlyDB = nil, false
	s.mu.Unlock()
	return db, true
}

// lockWithin takes s.mu's write lock with TryLock, retrying every
// millisecond for up to d. A plain Lock would make every new reader wait
// behind it, for ever if a reader never leaves.
func (s *Store) lockWithin(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !s.mu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// openReadOnly opens the directory read-only and installs it, so that
// reads go on while the store cannot write. A failure leaves s.db nil:
// reads then get ErrUnavailable too.
func (s *Store) openReadOnly() {
	ro := s.opts.Clone()
	ro.ReadOnly = true
	ro.FormatMajorVersion = pebble.FormatDefault
	db, err := openDB(s.cfg.Dir, ro)
	if err != nil {
		s.faults.Log(slog.LevelWarn, "readonly", "opening Pebble read-only failed: reads fail until the store recovers",
			"err", err.Error())
		return
	}
	s.mu.Lock()
	if s.mu.closed || s.db != nil {
		s.mu.Unlock()
		_ = s.closeWithin(db)
		return
	}
	s.db, s.mu.readOnlyDB = db, true
	s.mu.Unlock()
}

// probeRoom is the free space the probe wants before Pebble is reopened
// for writing.
const probeRoom = 1 << 20

// probe checks that the filesystem under Dir takes a synced write again:
// some free space, and a small file created, written, synced and removed.
func (s *Store) probe() error {
	fs, dir := s.cfg.FS, s.cfg.Dir
	if u, err := fs.GetDiskUsage(dir); err == nil && u.AvailBytes < probeRoom {
		return fmt.Errorf("%w: %d bytes available in %s", syscall.ENOSPC, u.AvailBytes, dir)
	}
	name := fs.PathJoin(dir, "chargeauth-probe")
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	var buf [4096]byte
	_, err = f.Write(buf[:])
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	return errors.Join(err, fs.Remove(name))
}

// closeWithin closes db, and gives up after stuckAfter: a Pebble whose
// commit pipeline failed while holding its mutex never closes.
func (s *Store) closeWithin(db *pebble.DB) error {
	done := make(chan error, 1)
	go func() { done <- closeDB(db) }()
	select {
	case err := <-done:
		if err != nil {
			s.log.Debug("closing Pebble after a failure", "err", err)
		}
		return nil
	case <-time.After(s.cfg.stuckAfter):
		return fmt.Errorf("pebble did not close within %s", s.cfg.stuckAfter)
	}
}

// fatal ends the process when Pebble cannot go on in it (a background
// Fatalf, a write stuck inside it, a Close that never returns): one clear
// line, then exit code 1. The WAL holds every acknowledged write, so a
// restart on the same directory recovers.
func (s *Store) fatal(why string) {
	s.log.Error("pebble cannot continue in this process: exiting; a restart on the same data directory recovers every acknowledged request",
		"err", why, "dir", s.cfg.Dir)
	s.cfg.exit(1)
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
			if fp, ok := v.(fatalPanic); ok && fp.err != nil {
				err = fmt.Errorf("persistence: open %s: %s: %w", dir, fp.msg, fp.err)
			}
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

// deleteFailedAccepts deletes, after a reopen and before db is installed,
// the records of accepts that returned an error: a failed fsync fails every
// commit waiting on it, yet their batches may have reached the WAL file and
// come back on replay. A request answered 503 must not be decided or called
// back.
func (s *Store) deleteFailedAccepts(db *pebble.DB) error {
	s.failedMu.Lock()
	ids := s.failedAccepts
	s.failedMu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	b := db.NewBatch()
	defer b.Close()
	var kb [64]byte
	n := 0
	for _, id := range ids {
		r, err := s.getRLocked(db, id)
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
	if err := applyAtOpen(db, b, pebble.Sync); err != nil {
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
