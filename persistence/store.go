package persistence

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chargeauth/chargeauth/session"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Sentinel errors. Callers compare with errors.Is: most are returned wrapped.
var (
	// ErrClosing: Close has been called; nothing was read or written.
	ErrClosing = errors.New("persistence: closing")
	// ErrDiskFull: free space under Config.Dir is below Config.MinFreeDisk;
	// the request was not written.
	ErrDiskFull = errors.New("persistence: disk full")
	// ErrNotFound: no record has that id.
	ErrNotFound = errors.New("persistence: not found")
	// ErrWrongState: the record is not in the state the transition needs.
	ErrWrongState = errors.New("persistence: wrong state")
	// ErrUnavailable: a write to the disk failed (or Pebble reported a
	// failed flush or compaction); Pebble's commit pipeline cannot continue,
	// so the store reopens Pebble in the background. Until it has, every
	// write returns ErrUnavailable (wrapping ErrDiskFull too when the disk
	// is full) at once and nothing is written; reads go on, from a
	// read-only open of the same directory. What a failed commit held is
	// not durable (and not visible after reopen).
	ErrUnavailable = errors.New("persistence: unavailable")
)

// Config configures a Store.
type Config struct {
	// Dir is the Pebble directory.
	//
	// Default: "./data".
	Dir string

	// FS is the file system Pebble runs on. Tests pass vfs.NewMem().
	//
	// Default: vfs.Default.
	FS vfs.FS

	// MinFreeDisk is the free-space floor: Accept returns ErrDiskFull while
	// FS.GetDiskUsage(Dir).AvailBytes is below it. The reading is cached for
	// about 100ms. Transitions of requests already accepted are not refused:
	// the floor is the headroom they need. If the FS cannot report its usage
	// (vfs.NewMem), there is no floor.
	//
	// Default: 0 (no floor). cmd passes 256 MiB.
	MinFreeDisk uint64

	// Logger receives Pebble's log lines and its events (background errors,
	// slow disk, write stalls, low disk space).
	//
	// Default: slog.Default().
	Logger *slog.Logger

	// ReadOnly opens the store read-only, for a CLI reading the store of a
	// stopped service. Writers return pebble.ErrReadOnly, wrapped.
	//
	// Default: false.
	ReadOnly bool

	// SyncLinger is how long a group of syncs alone (a durable
	// transition's wait, SyncWAL) waits for an accept to share its fsync
	// (see committer). A transition waits at most this much longer; an
	// accept never waits for it.
	//
	// Default: 0 (no wait). The service passes DefaultSyncLinger.
	SyncLinger time.Duration

	// now is the clock of the disk-usage cache. Test-only.
	//
	// Default: time.Now.
	now func() time.Time

	// recoverMin and recoverMax bound the pause between attempts to
	// reopen Pebble after a failed write: it starts at recoverMin and
	// doubles up to recoverMax. Test-only.
	//
	// Default: 100ms and 3s (so that writes resume within about 3s of the
	// fault clearing, plus the reopen).
	recoverMin, recoverMax time.Duration

	// stuckAfter is how long the recovery waits for a write stuck inside
	// the failed Pebble, or for its Close, before it gives up and exits
	// the process (a restart recovers). Test-only.
	//
	// Default: 30s.
	stuckAfter time.Duration

	// exit ends the process when Pebble cannot go on (see fatal).
	// Test-only.
	//
	// Default: os.Exit.
	exit func(code int)

	// logEvery is the shortest interval between two lines about one
	// fault. Test-only.
	//
	// Default: 1s.
	logEvery time.Duration

	// diskCheckEvery is how long a disk-usage reading is reused. Test-only.
	//
	// Default: defaultDiskCheckEvery. Negative: read on every Accept.
	diskCheckEvery time.Duration
}

const defaultDiskCheckEvery = 100 * time.Millisecond

func (c *Config) setDefaults() {
	if c.Dir == "" {
		c.Dir = "./data"
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.recoverMin == 0 {
		c.recoverMin = 100 * time.Millisecond
	}
	if c.recoverMax == 0 {
		c.recoverMax = 3 * time.Second
	}
	if c.stuckAfter == 0 {
		c.stuckAfter = 30 * time.Second
	}
	if c.exit == nil {
		c.exit = os.Exit
	}
	if c.logEvery == 0 {
		c.logEvery = time.Second
	}
	if c.diskCheckEvery == 0 {
		c.diskCheckEvery = defaultDiskCheckEvery
	}
}

// Validate reports a configuration Open cannot use. Call it after defaults
// are applied (Open does both).
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("persistence: config: empty Dir")
	}
	return nil
}

// numStripes is the number of per-id transition locks.
const numStripes = 256

// stripe is one per-id lock, padded to a cache line so that neighbouring
// stripes taken by different cores do not share one.
type stripe struct {
	sync.Mutex
	_ [64 - 8]byte
}

// numStates is the number of session states; counts is indexed by stateIndex.
const numStates = 4

var states = [numStates]session.State{
	session.StatePending, session.StateDecided, session.StateDelivered, session.StateFailed,
}

func stateIndex(s session.State) int {
	switch s {
	case session.StatePending:
		return 0
	case session.StateDecided:
		return 1
	case session.StateDelivered:
		return 2
	case session.StateFailed:
		return 3
	}
	return -1
}

// Store is chargeauth's durable state: one record per request, indexed by
// state. All methods are safe for concurrent use.
type Store struct {
	cfg   Config
	log   *slog.Logger
	opts  *pebble.Options
	cache *pebble.Cache // opts.Cache: kept across reopens, released by Close
	db    *pebble.DB    // nil while a reopen after a failed write is pending; guarded by mu

	// broken is set when a write failed; writes then return the fault's
	// error at once, until recoverLoop has reopened Pebble. fault says why.
	broken atomic.Bool
	fault  atomic.Pointer[fault]
	// failures counts refused and failed writes, indexed like Causes.
	failures [len(Causes)]atomic.Int64
	// faults rate-limits the log lines about faults.
	faults *faultLog

	// closing is set when Close starts; stop is closed then, and Close
	// waits for a running recoverLoop (recoverWG). lifeMu orders starting
	// a recoverLoop against Close.
	closing   atomic.Bool
	stop      chan struct{}
	stopOnce  sync.Once
	lifeMu    sync.Mutex
	recoverWG sync.WaitGroup
	// stuckSince is when takeDB first failed to get the lock, in a row;
	// only recoverLoop (one at a time) touches it.
	stuckSince time.Time

	failedMu      sync.Mutex
	failedAccepts []string // see forgetOnRecover

	mu struct {
		// RWMutex guards closed and the life of db: every method that
		// touches db holds the read lock while it does; Close takes the
		// write lock, so it waits for writes in flight.
		sync.RWMutex
		closed bool
		// readOnlyDB: db is a read-only open that serves reads while
		// the store recovers from a failed write.
		readOnlyDB bool
		// ids serialises read-check-write transitions on one id. Lock
		// order: mu.RLock, then one ids stripe. Only Expire holds
		// several, taken in ascending index order.
		ids [numStripes]stripe
		// onRecover is called (without locks) after each reopen.
		onRecover []func()
		// failedAccepts are the ids whose Accept commit failed: the
		// caller was told nothing was accepted, but a failed fsync may
		// still have left the batch in the WAL. The reopen deletes them.
		// (guarded by failedMu, not by the RWMutex: Accept holds the read
		// lock when it fails.)
	}

	// counts holds the number of records in each state, indexed by
	// stateIndex. Counted from the index at Open, then moved after each
	// committed transition.
	counts [numStates]atomic.Int64

	disk diskFloor

	committer committer
}

// DefaultSyncLinger is the service's Config.SyncLinger: about the time
// from an accept to its decision when the authorization service answers
// at once, so that at a few hundred requests a second a decision's sync
// mostly rides on a later accept's fsync. When the front is idle, a
// decision's callback leaves up to this much later.
const DefaultSyncLinger = 2 * time.Millisecond

// Open opens (creating unless cfg.ReadOnly) the store in cfg.Dir and counts
// the records in each state.
func Open(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: cfg.Logger.With("component", "persistence"), stop: make(chan struct{})}
	s.committer.s = s
	s.committer.linger = cfg.SyncLinger
	s.faults = newFaultLog(s.log, cfg.logEvery, time.Now)
	plog := cfg.Logger.With("component", "pebble")

	opts := &pebble.Options{
		FS:                 cfg.FS,
		ReadOnly:           cfg.ReadOnly,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{l: plog, faults: newFaultLog(plog, cfg.logEvery, time.Now), fatal: s.fatal},
		EventListener:      s.eventListener(plog),
		// A record is read back by each transition, mostly within seconds
		// of being written: large memtables keep it there, where a read
		// is a skiplist lookup, not an sstable block decode.
		MemTableSize: 64 << 20,
		// Backlog scans and transitions read records that have left the
		// memtables: with Pebble's default 8 MiB cache, every such read
		// decoded the sstable's index block again (a fifth of the CPU
		// while a backlog drained).
		Cache: pebble.NewCache(64 << 20),
	}
	if cfg.ReadOnly {
		// A read-only open cannot ratchet the format: keep what is on disk.
		opts.FormatMajorVersion = pebble.FormatDefault
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		opts.Cache.Unref()
		return nil, openError(cfg, err) // a *LockedError when another process holds cfg.Dir
	}
	s.cache = opts.Cache
	s.opts = opts
	s.db = db
	s.disk.init(s)
	if err := s.initCounts(); err != nil {
		_ = db.Close()
		s.cache.Unref()
		return nil, err
	}
	if !cfg.ReadOnly {
		if err := s.rebuildDueIndex(); err != nil {
			_ = db.Close()
			s.cache.Unref()
			return nil, err
		}
	}
	return s, nil
}

// rebuildDueIndex writes the due index again from the decided records, at
// every Open that can write, before the store is shared: the index is then
// right whatever wrote the store before (a version from before the index,
// one rolled back to, a crash in the middle of an earlier rebuild). It is
// written in chunks, and only the last waits for its fsync: a crash before
// that leaves an index that the next Open rebuilds anyway. A decided record
// that cannot be read gets no entry, and a warning: it must not keep the
// service from starting, nor the other callbacks from going out.
func (s *Store) rebuildDueIndex() error {
	start := time.Now()
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	prefix := []byte(duePrefix)
	if err := b.DeleteRange(prefix, prefixEnd(prefix), nil); err != nil {
		return fmt.Errorf("persistence: rebuild due index: %w", err)
	}
	lo := indexPrefix(nil, session.StateDecided)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return fmt.Errorf("persistence: rebuild due index: %w", err)
	}
	recs, err := newRecordIter(s.db)
	if err != nil {
		_ = it.Close()
		return fmt.Errorf("persistence: rebuild due index: %w", err)
	}
	var kb [64]byte
	n := 0
	for valid := it.First(); valid && err == nil; valid = it.Next() {
		id := string(it.Key()[len(lo):])
		rec, rerr := readAt(recs, recordKey(kb[:0], id), id)
		if rerr != nil {
			s.log.Warn("a decided request cannot be read: its callback waits until it can", "request_id", id, "err", rerr)
			continue
		}
		if err = b.Set(dueKey(kb[:0], rec.NextAttemptAt, id), nil, nil); err == nil && b.Count() >= dueRebuildChunk {
			err = applyAtOpen(s.db, b, pebble.NoSync)
			b.Close()
			b = s.db.NewBatch()
		}
		n++
	}
	if err := errors.Join(err, it.Error(), it.Close(), recs.Error(), recs.Close()); err != nil {
		return fmt.Errorf("persistence: rebuild due index: %w", err)
	}
	if err := applyAtOpen(s.db, b, pebble.Sync); err != nil {
		return fmt.Errorf("persistence: rebuild due index: %w", err)
	}
	if n > 0 {
		s.log.Info("rebuilt the due index", "decided", n, "took_ms", ms(time.Since(start)))
	}
	return nil
}

// dueRebuildChunk is how many entries rebuildDueIndex writes in one batch.
const dueRebuildChunk = 4096

// applyAtOpen commits b and returns a failed commit's panic (see commit)
// as an error: Open fails, with nothing to recover yet.
func applyAtOpen(db *pebble.DB, b *pebble.Batch, opts *pebble.WriteOptions) (err error) {
	defer func() {
		if v := recover(); v != nil {
			why, cause := failedWrite(v)
			err = fmt.Errorf("%w: %s", ErrUnavailable, why)
			if cause != nil {
				err = fmt.Errorf("%w: %s: %w", ErrUnavailable, why, cause)
			}
		}
	}()
	return db.Apply(b, opts)
}

// initCounts counts the state index. It runs once, in Open, before the store
// is shared.
func (s *Store) initCounts() error {
	counts, err := countStates(s.db)
	if err != nil {
		return err
	}
	for i, n := range counts {
		s.counts[i].Store(n)
	}
	return nil
}

// countStates counts the entries of each state's index in db.
func countStates(db *pebble.DB) (counts [numStates]int64, err error) {
	for i, st := range states {
		lo := indexPrefix(nil, st)
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
		if err != nil {
			return counts, fmt.Errorf("persistence: count %s: %w", st, err)
		}
		var n int64
		for valid := it.First(); valid; valid = it.Next() {
			n++
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return counts, fmt.Errorf("persistence: count %s: %w", st, err)
		}
		counts[i] = n
	}
	return counts, nil
}

// Close stops a recovery in progress, waits for reads and writes in flight,
// then closes Pebble. Later calls to any method but Count return
// ErrClosing. Close is idempotent: a second call returns nil. If a write is
// stuck inside a failed Pebble, Close gives up after a while and returns an
// error (the next start recovers from the WAL).
func (s *Store) Close() error {
	s.lifeMu.Lock()
	s.closing.Store(true)
	s.lifeMu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	s.recoverWG.Wait()
	if !s.lockWithin(s.cfg.stuckAfter) {
		return errors.New("persistence: close: a write is stuck in Pebble after a failed write; the next start recovers from the WAL")
	}
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil
	}
	s.mu.closed = true
	defer s.cache.Unref()
	if s.db == nil {
		return nil
	}
	db := s.db
	s.db = nil
	if err := s.closeWithin(db); err != nil {
		return fmt.Errorf("persistence: close: %w", err)
	}
	return nil
}

// rlock takes the read lock for a read and reports ErrClosing (releasing
// it) if Close has been called, or ErrUnavailable while the recovery has
// no Pebble open (between closing the failed one and opening the next).
// Reads go on while the store is broken. On nil, the caller must call
// s.mu.RUnlock.
func (s *Store) rlock() error {
	s.mu.RLock()
	if s.mu.closed {
		s.mu.RUnlock()
		return ErrClosing
	}
	if s.db == nil {
		s.mu.RUnlock()
		if err := s.brokenErr(); err != nil {
			return err
		}
		return ErrUnavailable
	}
	return nil
}

// wlock is rlock for a write: it also refuses, at once and without
// touching Pebble, while the store is broken or closing. (The writers
// count their failures by cause, with countFailure.)
func (s *Store) wlock() error {
	if s.closing.Load() {
		return ErrClosing
	}
	if err := s.brokenErr(); err != nil {
		return err
	}
	return s.rlock()
}

// brokenErr is the fault's error while the store is broken, else nil.
func (s *Store) brokenErr() error {
	if !s.broken.Load() {
		return nil
	}
	if f := s.fault.Load(); f != nil {
		return f.error()
	}
	return ErrUnavailable
}

// stripeFor returns the transition lock of id.
func (s *Store) stripeFor(id string) *sync.Mutex {
	return &s.mu.ids[fnv32a(id)%numStripes].Mutex
}

// fnv32a is FNV-1a over s, inline so that hashing an id does not allocate.
func fnv32a(s string) uint32 {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= prime
	}
	return h
}

// Count returns the number of records in state st ("" = all states). It reads
// in-memory counters and works after Close (the last values).
func (s *Store) Count(st session.State) int64 {
	if st == "" {
		var n int64
		for i := range s.counts {
			n += s.counts[i].Load()
		}
		return n
	}
	i := stateIndex(st)
	if i < 0 {
		return 0
	}
	return s.counts[i].Load()
}
