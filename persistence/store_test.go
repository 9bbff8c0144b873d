package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestDecideExactlyOnce races two Decides with different statuses on one
// pending id, 100 times: exactly one wins, and the store holds its status.
func TestDecideExactlyOnce(t *testing.T) {
	s := mustOpen(t, memConfig())
	statuses := [2]session.Status{session.StatusAllowed, session.StatusUnknown}
	bys := [2]session.DecidedBy{session.ByAuthz, session.ByTimeout}
	for round := range 100 {
		id := testID(0, round)
		mustAccept(t, s, id)
		var (
			start = make(chan struct{})
			wg    sync.WaitGroup
			recs  [2]session.Record
			errs  [2]error
		)
		for i := range 2 {
			wg.Go(func() {
				<-start
				recs[i], errs[i] = s.Decide(id, statuses[i], "", bys[i], t0)
			})
		}
		close(start)
		wg.Wait()

		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: want exactly one winner, got errors %v and %v", round, errs[0], errs[1])
		}
		win, lose := 0, 1
		if errs[0] != nil {
			win, lose = 1, 0
		}
		if !errors.Is(errs[lose], ErrWrongState) {
			t.Fatalf("round %d: loser: want ErrWrongState, got %v", round, errs[lose])
		}
		if recs[lose].Status != statuses[win] {
			t.Fatalf("round %d: loser sees status %q, want the winner's %q", round, recs[lose].Status, statuses[win])
		}
		got, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != session.StateDecided || got.Status != statuses[win] || got.DecidedBy != bys[win] {
			t.Fatalf("round %d: stored %s/%s/%s, want decided/%s/%s", round, got.State, got.Status, got.DecidedBy, statuses[win], bys[win])
		}
	}
	if n := s.Count(session.StateDecided); n != 100 {
		t.Fatalf("Count(decided) = %d, want 100", n)
	}
	if n := s.Count(session.StatePending); n != 0 {
		t.Fatalf("Count(pending) = %d, want 0", n)
	}
}

// TestConcurrentAccept accepts 64 x 50 records from 64 goroutines at once.
func TestConcurrentAccept(t *testing.T) {
	const goroutines, each = 64, 50
	s := mustOpen(t, memConfig())
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := s.Accept(pending(testID(g, i), t0)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	if n := s.Count(session.StatePending); n != goroutines*each {
		t.Fatalf("Count(pending) = %d, want %d", n, goroutines*each)
	}
	for g := range goroutines {
		for i := range each {
			id := testID(g, i)
			rec, err := s.Get(id)
			if err != nil {
				t.Fatalf("get %s: %v", id, err)
			}
			if rec.ID != id || rec.State != session.StatePending {
				t.Fatalf("get %s: %+v", id, rec)
			}
		}
	}
	var n int
	prev := ""
	err := s.Scan(session.StatePending, "", 0, func(r session.Record) bool {
		if r.ID <= prev {
			t.Errorf("scan out of order: %s after %s", r.ID, prev)
		}
		prev = r.ID
		n++
		return true
	})
	if err != nil || n != goroutines*each {
		t.Fatalf("scan: %d records, err %v; want %d", n, err, goroutines*each)
	}
}

// TestClosedStore: after Close, every method returns ErrClosing instead of
// reaching Pebble (which would panic), and Close is idempotent.
func TestClosedStore(t *testing.T) {
	s := mustOpen(t, memConfig())
	mustAccept(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, decideErr := s.Decide("a", session.StatusAllowed, "", session.ByAuthz, t0)
	_, attemptErr := s.RecordAttempt("a", Attempt{At: t0, Outcome: session.StateDelivered})
	_, redeliverErr := s.Redeliver("a", t0)
	_, getErr := s.Get("a")
	_, listErr := s.List("", "", 0)
	for name, err := range map[string]error{
		"Accept":        s.Accept(pending("b", t0)),
		"Decide":        decideErr,
		"RecordAttempt": attemptErr,
		"Redeliver":     redeliverErr,
		"Get":           getErr,
		"Scan":          s.Scan(session.StatePending, "", 0, func(session.Record) bool { return true }),
		"List":          listErr,
	} {
		if !errors.Is(err, ErrClosing) {
			t.Errorf("%s after Close: %v, want ErrClosing", name, err)
		}
	}
	if n := s.Count(session.StatePending); n != 1 {
		t.Errorf("Count after Close = %d, want 1", n)
	}
}

// TestCloseDuringAccepts closes the store while 32 goroutines accept: no
// panic, every error is ErrClosing, and every acknowledged record is in the
// store when it is opened again.
func TestCloseDuringAccepts(t *testing.T) {
	const goroutines, each = 32, 200
	cfg := memConfig()
	s := mustOpen(t, cfg)

	var (
		wg       sync.WaitGroup
		accepted atomic.Int64
		midway   = make(chan struct{})
		once     sync.Once
		acked    = make([][]string, goroutines)
		bad      = make(chan error, goroutines)
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				id := testID(g, i)
				err := s.Accept(pending(id, t0))
				switch {
				case err == nil:
					acked[g] = append(acked[g], id)
					if accepted.Add(1) == goroutines*each/4 {
						once.Do(func() { close(midway) })
					}
				case errors.Is(err, ErrClosing):
					return
				default:
					bad <- err
					return
				}
			}
		})
	}
	<-midway
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	wg.Wait()
	close(bad)
	for err := range bad {
		t.Errorf("accept during close: %v, want nil or ErrClosing", err)
	}
	if n := accepted.Load(); n >= goroutines*each {
		t.Logf("every accept finished before Close (%d): the race was not exercised", n)
	}

	s2 := mustOpen(t, cfg)
	if got, want := s2.Count(session.StatePending), accepted.Load(); got != want {
		t.Errorf("after reopen Count(pending) = %d, want %d acknowledged", got, want)
	}
	for _, ids := range acked {
		for _, id := range ids {
			if _, err := s2.Get(id); err != nil {
				t.Fatalf("acknowledged %s: %v", id, err)
			}
		}
	}
}

// TestDurableMeansSynced accepts records concurrently on a crashable file
// system, takes the state a crash would leave (only synced data), and finds
// every acknowledged record, decision, retry outcome and dead letter in it.
// (A delivered outcome need not survive: its callback is sent again.)
func TestDurableMeansSynced(t *testing.T) {
	const goroutines, each = 16, 25
	fs := vfs.NewCrashableMem()
	s := mustOpen(t, Config{Dir: "db", FS: fs, Logger: quietLogger()})

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := s.Accept(pending(testID(g, i), t0)); err != nil {
					t.Errorf("accept: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	decided, failed := testID(0, 0), testID(0, 1)
	if _, err := s.Decide(decided, session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decide(failed, session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordAttempt(failed, Attempt{At: t0, Err: "410", Outcome: session.StateFailed}); err != nil {
		t.Fatal(err)
	}
	// The retry is the last write: no later sync can carry it to disk.
	retry, retryAt := testID(0, 2), t0.Add(time.Minute)
	if _, err := s.Decide(retry, session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordAttempt(retry, Attempt{At: t0, Err: "500", Outcome: session.StateDecided, NextAt: retryAt}); err != nil {
		t.Fatal(err)
	}

	// The crash: no Close, no flush. CrashCloneCfg{} keeps exactly what was
	// synced.
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	s2 := mustOpen(t, Config{Dir: "db", FS: crashed, Logger: quietLogger()})
	for g := range goroutines {
		for i := range each {
			if _, err := s2.Get(testID(g, i)); err != nil {
				t.Fatalf("after crash: %v", err)
			}
		}
	}
	if got, want := s2.Count(""), int64(goroutines*each); got != want {
		t.Fatalf("after crash Count() = %d, want %d", got, want)
	}
	if rec, err := s2.Get(decided); err != nil || rec.State != session.StateDecided || rec.Status != session.StatusAllowed {
		t.Fatalf("after crash, decided record: %+v, %v", rec, err)
	}
	if rec, err := s2.Get(failed); err != nil || rec.State != session.StateFailed {
		t.Fatalf("after crash, failed record: %+v, %v", rec, err)
	}
	if rec, err := s2.Get(retry); err != nil || rec.State != session.StateDecided || rec.CallbackAttempts != 1 || !rec.NextAttemptAt.Equal(retryAt) {
		t.Fatalf("after crash, retried record: %+v, %v; want decided, 1 attempt, next at %v", rec, err, retryAt)
	}
}

// TestCountsSurviveReopen moves records through every state, reopens, and
// compares the counters (rebuilt from the index) with the ones kept in memory.
func TestCountsSurviveReopen(t *testing.T) {
	cfg := memConfig()
	s := mustOpen(t, cfg)
	for i := range 100 {
		id := testID(0, i)
		mustAccept(t, s, id)
		if i%2 == 0 {
			continue
		}
		if _, err := s.Decide(id, session.StatusNotAllowed, "blocked", session.ByAuthz, t0); err != nil {
			t.Fatal(err)
		}
		var outcome session.State
		switch i % 5 {
		case 1:
			outcome = session.StateDelivered
		case 3:
			outcome = session.StateFailed
		default:
			continue
		}
		if _, err := s.RecordAttempt(id, Attempt{At: t0, Outcome: outcome}); err != nil {
			t.Fatal(err)
		}
	}
	var before [numStates]int64
	for i, st := range states {
		before[i] = s.Count(st)
	}
	if before[0] != 50 || before[0]+before[1]+before[2]+before[3] != 100 || before[2] == 0 || before[3] == 0 {
		t.Fatalf("counts before reopen: %v", before)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, cfg)
	for i, st := range states {
		if got := s2.Count(st); got != before[i] {
			t.Errorf("Count(%s) after reopen = %d, want %d", st, got, before[i])
		}
	}
}

// TestMinFreeDisk: under the floor Accept returns ErrDiskFull and writes
// nothing; the reading is cached for diskCheckEvery; transitions of accepted
// records are not refused.
func TestMinFreeDisk(t *testing.T) {
	const floor = 256 << 20
	fs := vfs.NewMem()
	setAvail := func(n uint64) {
		fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: n, TotalBytes: 1 << 40, UsedBytes: 1<<40 - n})
	}
	setAvail(floor - 1)
	clock := newFakeClock(t0)
	s := mustOpen(t, Config{Dir: "db", FS: fs, Logger: quietLogger(), MinFreeDisk: floor, now: clock.now})

	err := s.Accept(pending("a", t0))
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("accept under the floor: %v, want ErrDiskFull", err)
	}
	if _, err := s.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after refused accept: %v, want ErrNotFound", err)
	}
	if n := s.Count(""); n != 0 {
		t.Fatalf("Count after refused accept = %d", n)
	}

	// Space returns, but the cached reading holds for diskCheckEvery.
	setAvail(floor)
	if err := s.Accept(pending("a", t0)); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("accept within the cache period: %v, want the cached ErrDiskFull", err)
	}
	clock.advance(defaultDiskCheckEvery)
	mustAccept(t, s, "a")

	// Full again: Accept refuses, Decide of the accepted record goes on.
	setAvail(0)
	clock.advance(defaultDiskCheckEvery)
	if err := s.Accept(pending("b", t0)); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("accept: %v, want ErrDiskFull", err)
	}
	if _, err := s.Decide("a", session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
		t.Fatalf("decide under the floor: %v", err)
	}
}

// TestMinFreeDiskUnknown: a file system that cannot report its usage (a bare
// vfs.NewMem) has no floor.
func TestMinFreeDiskUnknown(t *testing.T) {
	cfg := memConfig()
	cfg.MinFreeDisk = 1 << 60
	cfg.diskCheckEvery = -1
	s := mustOpen(t, cfg)
	mustAccept(t, s, "a")
}

// TestReadOnly opens a stopped service's store for reading.
func TestReadOnly(t *testing.T) {
	cfg := memConfig()
	s := mustOpen(t, cfg)
	mustAccept(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.ReadOnly = true
	ro := mustOpen(t, cfg)
	if _, err := ro.Get("a"); err != nil {
		t.Fatal(err)
	}
	if n := ro.Count(session.StatePending); n != 1 {
		t.Fatalf("Count(pending) = %d, want 1", n)
	}
	if err := ro.Accept(pending("b", t0)); !errors.Is(err, pebble.ErrReadOnly) {
		t.Fatalf("accept read-only: %v, want pebble.ErrReadOnly", err)
	}
	if _, err := ro.Decide("a", session.StatusAllowed, "", session.ByAuthz, t0); !errors.Is(err, pebble.ErrReadOnly) {
		t.Fatalf("decide read-only: %v, want pebble.ErrReadOnly", err)
	}
	if n := ro.Count(session.StatePending); n != 1 {
		t.Fatalf("Count(pending) after refused writes = %d, want 1", n)
	}
}

// TestScanCallbackMayCallStore: Scan holds no lock while fn runs, so fn may
// decide the record it is given, even across pages and with Close waiting.
func TestScanCallbackMayCallStore(t *testing.T) {
	s := mustOpen(t, memConfig())
	const n = 2*scanPageSize + 7
	for i := range n {
		mustAccept(t, s, testID(0, i))
	}
	var seen int
	err := s.Scan(session.StatePending, "", 0, func(r session.Record) bool {
		seen++
		if _, err := s.Decide(r.ID, session.StatusUnknown, "", session.ByTimeout, t0); err != nil {
			t.Errorf("decide in scan: %v", err)
		}
		return true
	})
	if err != nil || seen != n {
		t.Fatalf("scan: saw %d of %d, err %v", seen, n, err)
	}
	if got := s.Count(session.StateDecided); got != n {
		t.Fatalf("Count(decided) = %d, want %d", got, n)
	}
}

// TestFatalfPanics: Pebble's contract is that Logger.Fatalf does not return.
func TestFatalfPanics(t *testing.T) {
	defer func() {
		if r, ok := recover().(fatalPanic); !ok || r.msg != "pebble: boom 1" {
			t.Fatalf("recovered %v, want the message", r)
		}
	}()
	exited := false
	pebbleLogger{l: quietLogger(), fatal: func(string) { exited = true }}.Fatalf("pebble: boom %d", 1)
	if exited {
		t.Error("Fatalf called from the store's goroutine exited instead of panicking")
	}
	t.Fatal("Fatalf returned")
}

// BenchmarkAccept measures durable accepts on a real disk. Many goroutines
// per CPU, as the front runs them, so that commits share fsyncs.
func BenchmarkAccept(b *testing.B) {
	s := mustOpen(b, Config{Dir: filepath.Join(b.TempDir(), "db"), Logger: quietLogger()})
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("%016x", seq.Add(1))
			if err := s.Accept(pending(id, t0)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepts/s")
}

// dueKeys lists the raw due index: "<id>@<offset from t0>" per entry.
func dueKeys(t *testing.T, s *Store) []string {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(duePrefix), UpperBound: prefixEnd([]byte(duePrefix))})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()[len(duePrefix):]
		at := time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC()
		out = append(out, fmt.Sprintf("%s@%v", k[8:], at.Sub(t0)))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDueIndexRebuiltAtOpen opens a store whose due index a version
// without it left wrong (an entry missing, a stale one, a wrong time):
// Open rebuilds it from the decided records.
func TestDueIndexRebuiltAtOpen(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, Config{Dir: "db", FS: fs, Logger: quietLogger()})
	for i := range 4 {
		mustAccept(t, s, testID(0, i))
		if _, err := s.Decide(testID(0, i), session.StatusAllowed, "", session.ByAuthz, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RecordAttempt(testID(0, 0), Attempt{At: t0, Err: "500", Outcome: session.StateDecided, NextAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordAttempt(testID(0, 3), Attempt{At: t0, Outcome: session.StateDelivered}); err != nil {
		t.Fatal(err)
	}
	want := []string{testID(0, 1) + "@1s", testID(0, 2) + "@2s", testID(0, 0) + "@1h0m0s"}
	if got := dueKeys(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("due index: %v, want %v", got, want)
	}
	b := s.db.NewBatch()
	for _, err := range []error{
		b.Delete(dueKey(nil, t0.Add(time.Second), testID(0, 1)), nil),     // missing
		b.Set(dueKey(nil, t0.Add(3*time.Second), testID(0, 3)), nil, nil), // stale: delivered
		b.Delete(dueKey(nil, t0.Add(time.Hour), testID(0, 0)), nil),       // at the wrong time
		b.Set(dueKey(nil, t0, testID(0, 0)), nil, nil),
		b.Commit(pebble.Sync),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, Config{Dir: "db", FS: fs, Logger: quietLogger()})
	if got := dueKeys(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopen, due index: %v, want %v", got, want)
	}
}

// A failed accept that was decided before the store broke (Pebble shows a
// batch before its fsync ends) leaves no due entry when the reopen
// deletes it.
func TestFailedAcceptLeavesNoDueEntry(t *testing.T) {
	s := mustOpen(t, memConfig())
	bad, good := testID(0, 0), testID(0, 1)
	for _, id := range []string{bad, good} {
		mustAccept(t, s, id)
		if _, err := s.Decide(id, session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
			t.Fatal(err)
		}
	}
	s.forgetOnRecover(bad)
	if err := s.deleteFailedAccepts(s.db); err != nil {
		t.Fatal(err)
	}
	if got, want := dueKeys(t, s), []string{good + "@0s"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("due index: %v, want %v", got, want)
	}
}

// TestIndexDisagreesWithRecord damages the store: index entries for a
// record in another state. Scan reports it as corruption rather than hand
// out a record in the wrong state; ScanDue passes over the entry and
// deletes it (a version without the due index can leave such entries),
// and goes on to the next.
func TestIndexDisagreesWithRecord(t *testing.T) {
	s := mustOpen(t, memConfig())
	bad, good := testID(0, 0), testID(0, 1)
	mustAccept(t, s, bad)
	mustAccept(t, s, good)
	if _, err := s.Decide(good, session.StatusAllowed, "", session.ByAuthz, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	b := s.db.NewBatch()
	if err := b.Set(indexKey(nil, session.StateDecided, bad), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Set(dueKey(nil, t0, bad), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	err := s.Scan(session.StateDecided, "", 0, func(r session.Record) bool {
		if r.ID == bad {
			t.Errorf("Scan handed out %s", formatRecord(r))
		}
		return true
	})
	if !errors.Is(err, errCorrupt) {
		t.Errorf("Scan: %v, want corruption", err)
	}
	var got []string
	_, err = s.ScanDue(DuePos{}, t0.Add(time.Hour), 0, func(_ DuePos, r session.Record) bool {
		got = append(got, r.ID)
		return true
	})
	if err != nil || fmt.Sprint(got) != fmt.Sprint([]string{good}) {
		t.Errorf("ScanDue: %v, %v; want [%s], nil", got, err, good)
	}
	if got, want := dueKeys(t, s), []string{good + "@1s"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("due index after ScanDue: %v, want %v", got, want)
	}
}

// A decided record that cannot be read neither keeps the store from
// opening nor the other decided records out of the due index.
func TestOpenWithAnUnreadableDecidedRecord(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, Config{Dir: "db", FS: fs, Logger: quietLogger()})
	bad, good := testID(0, 0), testID(0, 1)
	for _, id := range []string{bad, good} {
		mustAccept(t, s, id)
		if _, err := s.Decide(id, session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.Set(recordKey(nil, bad), []byte{0x7f}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, Config{Dir: "db", FS: fs, Logger: quietLogger()})
	if got, want := dueKeys(t, s), []string{good + "@0s"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("due index: %v, want %v", got, want)
	}
}
