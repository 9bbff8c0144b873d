package persistence

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

// walDisk is an errorfs.Injector that plays the disk under the WAL: each WAL
// fsync takes syncDelay (as on a real disk, so that writers pile up behind
// it), the next WAL fsync can be held until released, and every write fails
// while failing is set. syncs counts the WAL fsyncs as they start: before
// the writers waiting for them wake, unlike Pebble's fsync histogram, which
// its flush loop updates after it woke them.
type walDisk struct {
	syncDelay time.Duration // set before the store opens
	hold      atomic.Pointer[walHold]
	failing   atomic.Bool
	syncs     atomic.Int64
}

// walHold holds one WAL fsync: entered is closed when it starts, and it
// proceeds once release is closed.
type walHold struct{ entered, release chan struct{} }

func (d *walDisk) String() string { return "walDisk" }

func (d *walDisk) MaybeError(op errorfs.Op) error {
	if d.failing.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		return errorfs.ErrInjected
	}
	if !strings.HasSuffix(op.Path, ".log") || op.Kind != errorfs.OpFileSync && op.Kind != errorfs.OpFileSyncData {
		return nil
	}
	d.syncs.Add(1)
	if h := d.hold.Swap(nil); h != nil {
		close(h.entered)
		<-h.release
	}
	if d.syncDelay > 0 {
		time.Sleep(d.syncDelay) // a slow fsync, on purpose
	}
	return nil
}

// holdNextSync makes the next WAL fsync wait until the returned hold is
// released.
func (d *walDisk) holdNextSync() *walHold {
	h := &walHold{entered: make(chan struct{}), release: make(chan struct{})}
	d.hold.Store(h)
	return h
}

// openBounded opens cfg and closes the store at the end of the test, but
// gives up on a Close that does not return (a committer that lost a waiter
// keeps the read lock forever), so that a hang fails the test instead of
// timing out the binary.
func openBounded(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Errorf("Close did not return within 10s: a writer still holds the read lock\n%s", allStacks())
		}
	})
	return s
}

// allStacks is every goroutine's stack, for a test that found a hang.
func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// walBytesIn is the bytes of batches Pebble has written to its WAL.
func walBytesIn(t *testing.T, s *Store) uint64 {
	t.Helper()
	m, err := s.Metrics()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return m.WAL.BytesIn
}

// acceptEntriesSize is the size of the entries that accepting ids adds to a
// batch, without the batch header: with it, the WAL's BytesIn tells how many
// batches carried them.
func acceptEntriesSize(t *testing.T, s *Store, ids []string) uint64 {
	t.Helper()
	if err := s.rlock(); err != nil {
		t.Fatal(err)
	}
	defer s.mu.RUnlock()
	b := s.db.NewBatch()
	defer b.Close()
	var kb [64]byte
	for _, id := range ids {
		v, err := encodeRecord(nil, pending(id, t0))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Set(recordKey(kb[:0], id), v, nil); err != nil {
			t.Fatal(err)
		}
		if err := b.Set(indexKey(kb[:0], session.StatePending, id), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	return uint64(len(b.Repr()) - batchHeaderLen)
}

// batchHeaderLen is the size of a Pebble batch's header (sequence number and
// count), written once per committed batch.
const batchHeaderLen = 12

// Many concurrent Accepts form groups: far fewer batches and WAL fsyncs than
// accepts (one each would cap accepts at the disk's fsync rate), and every
// acknowledged accept survives a crash. TestDurableMeansSynced checks
// durability alone; this checks that the fsyncs are shared. Each WAL fsync
// takes a millisecond, as on a disk: a group forms behind it however slow
// the machine, and no assertion depends on timing.
func TestCommitterGroupsConcurrentAccepts(t *testing.T) {
	const writers, each = 64, 50
	const accepts = writers * each
	mem := vfs.NewCrashableMem()
	disk := &walDisk{syncDelay: time.Millisecond}
	s := openBounded(t, Config{Dir: "db", FS: errorfs.Wrap(mem, disk), Logger: quietLogger()})

	var ids []string
	for g := range writers {
		for i := range each {
			ids = append(ids, testID(g, i))
		}
	}
	entries := acceptEntriesSize(t, s, ids)
	syncs0, bytes0 := disk.syncs.Load(), walBytesIn(t, s)

	var acked [writers]atomic.Int64 // accepts acknowledged, per writer (in order)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Accept(pending(testID(g, i), t0)); err != nil {
					t.Errorf("accept %s: %v", testID(g, i), err)
					return
				}
				acked[g].Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("accepts did not finish within 60s (a lost wake-up?)\n%s", allStacks())
	}
	if t.Failed() {
		return
	}

	syncs := disk.syncs.Load() - syncs0
	bytesIn := walBytesIn(t, s) - bytes0
	if bytesIn < entries || (bytesIn-entries)%batchHeaderLen != 0 {
		t.Fatalf("WAL BytesIn grew by %d for %d bytes of entries: not whole batch headers", bytesIn, entries)
	}
	batches := (bytesIn - entries) / batchHeaderLen
	t.Logf("%d accepts: %d batches, %d WAL fsyncs (%.1f accepts per batch)", accepts, batches, syncs, float64(accepts)/float64(batches))
	if syncs == 0 || batches == 0 {
		t.Fatalf("no WAL fsync (%d) or batch (%d) counted: the metrics do not see the commits", syncs, batches)
	}
	// 64 writers behind a 1ms fsync give groups of dozens; 8 leaves a wide
	// margin for a slow machine, and one accept per batch (a committer that
	// stopped grouping) is 400 times over it.
	if batches*8 > accepts {
		t.Errorf("%d batches for %d accepts: the group commit does not group", batches, accepts)
	}
	if syncs*8 > accepts {
		t.Errorf("%d WAL fsyncs for %d accepts: fsyncs are not shared", syncs, accepts)
	}

	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	s2 := openBounded(t, Config{Dir: "db", FS: crashed, Logger: quietLogger()})
	for g := range writers {
		for i := range int(acked[g].Load()) {
			if _, err := s2.Get(testID(g, i)); err != nil {
				t.Fatalf("acknowledged %s lost in the crash: %v", testID(g, i), err)
			}
		}
	}
	if got := s2.Count(session.StatePending); got != accepts {
		t.Errorf("after the crash Count(pending) = %d, want %d", got, accepts)
	}
}

// A group whose commit fails fails every one of its waiters, accepts and
// syncs alike, with ErrUnavailable, and none hangs; the group before it is
// unaffected, and after the reopen the failed accepts are gone.
//
// The group is built deterministically: the first accept's WAL fsync is
// held, the others queue behind it (the test waits until the committer's
// queue holds them all), then the disk starts failing and the fsync is
// released: it succeeds, and the next group's WAL write fails.
func TestCommitterFailedGroupFailsEveryWaiter(t *testing.T) {
	const accepts, syncs, decides = 24, 6, 6
	disk := &walDisk{}
	cfg := Config{Dir: "db", FS: errorfs.Wrap(vfs.NewMem(), disk), Logger: quietLogger(), recoverMin: 5 * time.Millisecond}
	s := openBounded(t, cfg)
	recovered := new(atomic.Int32)
	s.OnRecover(func() { recovered.Add(1) })
	for i := range decides {
		mustAccept(t, s, testID(1, i)) // decided while the group waits
	}

	hold := disk.holdNextSync()
	leader := make(chan error, 1)
	go func() { leader <- s.Accept(pending(testID(0, 0), t0)) }()
	select {
	case <-hold.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first accept never reached its WAL fsync")
	}

	type result struct {
		what string
		err  error
	}
	results := make(chan result, accepts+syncs+decides)
	for i := range accepts {
		go func() {
			id := testID(2, i)
			results <- result{"accept " + id, s.Accept(pending(id, t0))}
		}()
	}
	for i := range syncs {
		go func() { results <- result{fmt.Sprintf("SyncWAL %d", i), s.SyncWAL()} }()
	}
	for i := range decides {
		go func() {
			id := testID(1, i)
			_, err := s.Decide(id, session.StatusAllowed, "", session.ByAuthz, t0)
			results <- result{"decide " + id, err}
		}()
	}
	// Every one of them waits in the committer's queue for the held group.
	queued := func() int {
		s.committer.mu.Lock()
		defer s.committer.mu.Unlock()
		return len(s.committer.queue)
	}
	if err := testwait.Poll(10*time.Second, time.Millisecond, func() error {
		if n := queued(); n < accepts+syncs+decides {
			return fmt.Errorf("%d of %d writers queued behind the held fsync", n, accepts+syncs+decides)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, allStacks())
	}

	disk.failing.Store(true)
	close(hold.release)

	timeout := time.After(10 * time.Second)
	select {
	case err := <-leader:
		if err != nil {
			t.Errorf("the accept whose fsync succeeded: %v", err)
		}
	case <-timeout:
		t.Fatalf("the first accept hung\n%s", allStacks())
	}
	for range accepts + syncs + decides {
		select {
		case r := <-results:
			if !errors.Is(r.err, ErrUnavailable) {
				t.Errorf("%s in the failed group = %v, want ErrUnavailable", r.what, r.err)
			}
		case <-timeout:
			t.Fatalf("a waiter of the failed group hung\n%s", allStacks())
		}
	}

	disk.failing.Store(false)
	testwait.Until(t, 10*time.Second, "the store to reopen after the fault cleared", func() bool { return recovered.Load() != 0 })
	if _, err := s.Get(testID(0, 0)); err != nil {
		t.Errorf("the acknowledged accept before the failed group: %v", err)
	}
	for i := range accepts {
		if _, err := s.Get(testID(2, i)); !errors.Is(err, ErrNotFound) {
			t.Errorf("failed accept %s after the reopen: %v, want ErrNotFound", testID(2, i), err)
		}
	}
	// The decisions were not acknowledged; whether they reached the WAL or
	// not, the counts match the records.
	if n, want := s.Count(""), int64(1+decides); n != want {
		t.Errorf("records counted after the reopen = %d, want %d", n, want)
	}
	mustAccept(t, s, testID(3, 0)) // and the committer works again
}

// A sync alone (no record: SyncWAL, a durable transition's wait) commits an
// empty synced WAL write that makes every write before it durable; many at
// once share the group commit and all return nil.
func TestCommitterSyncAlone(t *testing.T) {
	mem := vfs.NewCrashableMem()
	s := openBounded(t, Config{Dir: "db", FS: mem, Logger: quietLogger()})

	if err := s.SyncWAL(); err != nil {
		t.Fatalf("SyncWAL on an empty store: %v", err)
	}

	// A write committed without a sync (as writeLocked does) is not in a
	// crash's state until a sync alone follows it.
	mustAccept(t, s, testID(0, 0))
	if err := s.rlock(); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.writeLocked("test", testID(0, 0), nil, func(r *session.Record) error {
		r.State, r.Status, r.DecidedBy, r.DecidedAt = session.StateDecided, session.StatusAllowed, session.ByAuthz, t0
		return nil
	})
	s.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	stateAfterCrash := func(fs *vfs.MemFS) session.State {
		t.Helper()
		s2 := openBounded(t, Config{Dir: "db", FS: fs, Logger: quietLogger()})
		rec, err := s2.Get(testID(0, 0))
		if err != nil {
			t.Fatalf("after the crash: %v", err)
		}
		return rec.State
	}
	if st := stateAfterCrash(mem.CrashClone(vfs.CrashCloneCfg{})); st != session.StatePending {
		t.Fatalf("an unsynced write survived the crash (state %s): the test cannot tell a sync", st)
	}

	const goroutines = 16
	errs := make(chan error, goroutines)
	for range goroutines {
		go func() {
			if err := s.rlock(); err != nil {
				errs <- err
				return
			}
			defer s.mu.RUnlock()
			errs <- s.syncRLocked()
		}()
	}
	timeout := time.After(10 * time.Second)
	for range goroutines {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("syncRLocked: %v", err)
			}
		case <-timeout:
			t.Fatalf("a sync alone hung\n%s", allStacks())
		}
	}
	if st := stateAfterCrash(mem.CrashClone(vfs.CrashCloneCfg{})); st != session.StateDecided {
		t.Errorf("after syncs alone, the crash left the record %s, want decided", st)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncWAL(); !errors.Is(err, ErrClosing) {
		t.Errorf("SyncWAL after Close = %v, want ErrClosing", err)
	}
}

// The group commit reuses its batch from group to group, but never one made
// for a Pebble that a reopen replaced.
func TestCommitterBatchFollowsReopen(t *testing.T) {
	disk := &walDisk{}
	cfg := Config{Dir: "db", FS: errorfs.Wrap(vfs.NewMem(), disk), Logger: quietLogger(), recoverMin: 5 * time.Millisecond}
	s := openBounded(t, cfg)
	recovered := new(atomic.Int32)
	s.OnRecover(func() { recovered.Add(1) })
	mustAccept(t, s, testID(0, 0))
	first := s.committer.batchDB

	// A failed commit outside the committer (as a transition's or
	// Expire's) reopens Pebble while the committer still holds a batch of
	// the old one.
	disk.failing.Store(true)
	if err := s.rlock(); err != nil {
		t.Fatal(err)
	}
	b := s.db.NewBatch()
	_ = b.Set([]byte("x/fault"), nil, nil)
	err := s.commit(b, pebble.Sync)
	s.mu.RUnlock()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("commit during the fault = %v, want ErrUnavailable", err)
	}
	disk.failing.Store(false)
	testwait.Until(t, 10*time.Second, "the store to reopen", func() bool { return recovered.Load() != 0 })
	if s.committer.batchDB != first {
		t.Fatal("the committer's batch changed without a group")
	}
	mustAccept(t, s, testID(0, 1))
	if s.committer.batchDB == first || s.committer.batchDB != s.db {
		t.Error("the group after the reopen did not take a batch of the new Pebble")
	}
	for i := range 2 {
		if _, err := s.Get(testID(0, i)); err != nil {
			t.Errorf("%s: %v", testID(0, i), err)
		}
	}
}

// Syncs alone ride on accepts (Config.SyncLinger): a sync alone waits for
// an accept, which commits at once and carries it in its one fsync; an
// accept alone never waits; on a store with no accept within the linger a
// sync alone does not wait at all; a sync alone with no accept coming
// commits after the linger. The linger here is an hour, so that only an
// accept can end the first wait whatever the machine's speed; the last
// part has a store of its own with a short one.
func TestCommitterSyncsRideOnAccepts(t *testing.T) {
	disk := &walDisk{}
	s := openBounded(t, Config{Dir: "db", FS: errorfs.Wrap(vfs.NewMem(), disk), Logger: quietLogger(), SyncLinger: time.Hour})
	lingering := func() error {
		s.committer.mu.Lock()
		defer s.committer.mu.Unlock()
		if s.committer.lingering == nil {
			return errors.New("no sync alone is waiting for an accept")
		}
		return nil
	}

	// An accept alone commits at once (it would wait an hour otherwise).
	mustAccept(t, s, testID(0, 0))

	before := disk.syncs.Load()
	synced := make(chan error, 1)
	go func() { synced <- s.SyncWAL() }()
	if err := testwait.Poll(10*time.Second, time.Millisecond, lingering); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() { accepted <- s.Accept(pending(testID(0, 1), t0)) }()
	for what, done := range map[string]chan error{"the accept": accepted, "the sync that rode on it": synced} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s hung: the accept did not take the lead from the lingering sync\n%s", what, allStacks())
		}
	}
	if n := disk.syncs.Load() - before; n != 1 {
		t.Errorf("a sync alone and the accept it waited for took %d WAL fsyncs, want 1", n)
	}

	// With no accept for longer than the linger (none ever, here), a sync
	// alone does not wait: a backlog drained with the front idle is not
	// slowed down.
	idle := openBounded(t, Config{Dir: "idle", FS: vfs.NewMem(), Logger: quietLogger(), SyncLinger: time.Hour})
	go func() { synced <- idle.SyncWAL() }()
	select {
	case err := <-synced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a sync alone waited for an accept on an idle store\n%s", allStacks())
	}

	// No accept comes: the sync alone commits after the linger, durably.
	mem := vfs.NewCrashableMem()
	s2 := openBounded(t, Config{Dir: "db", FS: mem, Logger: quietLogger(), SyncLinger: 5 * time.Millisecond})
	mustAccept(t, s2, testID(1, 0))
	if _, err := s2.Decide(testID(1, 0), session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
		t.Fatal(err)
	}
	s3 := openBounded(t, Config{Dir: "db", FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger()})
	if rec, err := s3.Get(testID(1, 0)); err != nil || rec.State != session.StateDecided {
		t.Errorf("after a crash, the decision synced alone: %+v %v, want decided", rec.State, err)
	}
}
