package persistence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

// logSink collects JSON log lines, safe for concurrent use.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the lines whose msg contains substr.
func (l *logSink) lines(substr string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && strings.Contains(fmt.Sprint(m["msg"]), substr) {
			out = append(out, m)
		}
	}
	return out
}

// diskFault injects err into every write while on; only names matches the
// file's base name (nil: every file).
type diskFault struct {
	on    atomic.Bool
	err   error
	names func(base string) bool
	// probes counts the recovery's probe files created while on.
	probes   atomic.Int32
	probesAt struct {
		sync.Mutex
		at []time.Time
	}
}

func (d *diskFault) MaybeError(op errorfs.Op) error {
	if !d.on.Load() || op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
		return nil
	}
	switch op.Kind {
	case errorfs.OpLock, errorfs.OpFileClose, errorfs.OpRemove, errorfs.OpRemoveAll:
		// A full disk still takes a lock, closes and deletes files.
		return nil
	}
	base := filepath.Base(op.Path)
	if base == "chargeauth-probe" && op.Kind == errorfs.OpCreate {
		d.probes.Add(1)
		d.probesAt.Lock()
		d.probesAt.at = append(d.probesAt.at, time.Now())
		d.probesAt.Unlock()
	}
	if d.names != nil && !d.names(base) && base != "chargeauth-probe" {
		return nil
	}
	return d.err
}

func (d *diskFault) String() string { return fmt.Sprintf("diskFault(%v)", d.err) }

// openWithFault opens a store on a memory FS wrapped by d, with fast
// recovery, logging to the returned sink; exits records Store.fatal's
// exit codes instead of exiting.
func openWithFault(t *testing.T, d *diskFault, fs vfs.FS) (*Store, *logSink, *atomic.Int32) {
	t.Helper()
	if fs == nil {
		fs = vfs.NewMem()
	}
	sink := &logSink{}
	exits := new(atomic.Int32)
	cfg := Config{Dir: "db", FS: errorfs.Wrap(fs, d), Logger: slog.New(slog.NewJSONHandler(sink, nil)),
		recoverMin: 5 * time.Millisecond, recoverMax: 40 * time.Millisecond,
		exit: func(int) { exits.Add(1) }}
	return mustOpen(t, cfg), sink, exits
}

// seed accepts a, decides b, fails c (for Redeliver) and delivers d
// (finished long ago, for Expire).
func seed(t *testing.T, s *Store) {
	t.Helper()
	for _, id := range []string{"a", "b", "c", "d"} {
		mustAccept(t, s, id)
	}
	for _, id := range []string{"b", "c", "d"} {
		if _, err := s.Decide(id, session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RecordAttempt("c", Attempt{At: t0, Outcome: session.StateFailed, Err: "500"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordAttempt("d", Attempt{At: t0, Outcome: session.StateDelivered}); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncWAL(); err != nil { // a delivered outcome is not synced by itself
		t.Fatal(err)
	}
}

// Every write path, under a full disk: the write fails with ErrUnavailable
// and ErrDiskFull and changes nothing; every write after it is refused at
// once without touching Pebble; stored records stay readable; Health and
// the failure counter say why; once the disk takes writes again the store
// recovers by itself, and the same write succeeds.
func TestEveryWritePathUnderAFullDisk(t *testing.T) {
	later := t0.Add(time.Hour)
	for _, tc := range []struct {
		name  string
		write func(s *Store) error
		check func(t *testing.T, s *Store) // after recovery, the write redone
	}{
		{"accept", func(s *Store) error { return s.Accept(pending("e", t0)) }, func(t *testing.T, s *Store) {
			if _, err := s.Get("e"); err != nil {
				t.Errorf("accepted after recovery: %v", err)
			}
		}},
		{"decide", func(s *Store) error {
			_, err := s.Decide("a", session.StatusNotAllowed, "", session.ByAuthz, later)
			return err
		}, func(t *testing.T, s *Store) {
			if r, _ := s.Get("a"); r.State != session.StateDecided || r.Status != session.StatusNotAllowed {
				t.Errorf("a after recovery: %s", formatRecord(r))
			}
		}},
		{"attempt retry", func(s *Store) error {
			_, err := s.RecordAttempt("b", Attempt{At: later, Outcome: session.StateDecided, NextAt: later, Err: "500"})
			return err
		}, func(t *testing.T, s *Store) {
			if r, _ := s.Get("b"); r.CallbackAttempts != 1 {
				t.Errorf("b after recovery: %s", formatRecord(r))
			}
		}},
		{"redeliver", func(s *Store) error { _, err := s.Redeliver("c", later); return err }, func(t *testing.T, s *Store) {
			if r, _ := s.Get("c"); r.State != session.StateDecided {
				t.Errorf("c after recovery: %s", formatRecord(r))
			}
		}},
		{"sync", func(s *Store) error { return s.SyncWAL() }, func(t *testing.T, s *Store) {}},
		{"expire", func(s *Store) error { _, err := s.Expire(later, 10); return err }, func(t *testing.T, s *Store) {
			if _, err := s.Get("d"); !errors.Is(err, ErrNotFound) {
				t.Errorf("d after recovery: %v, want expired", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &diskFault{err: syscall.ENOSPC}
			s, sink, exits := openWithFault(t, d, nil)
			seed(t, s)
			before := map[string]session.Record{}
			for _, id := range []string{"a", "b", "c", "d"} {
				before[id], _ = s.Get(id)
			}

			d.on.Store(true)
			err := tc.write(s)
			if tc.name == "expire" && err == nil {
				// Expire does not sync: its batch failed in the WAL
				// writer, and the next synced write finds out.
				err = s.SyncWAL()
			}
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrDiskFull) {
				t.Fatalf("%s on a full disk = %v, want ErrUnavailable and ErrDiskFull", tc.name, err)
			}
			// Refused at once, every kind of write.
			for i := range 50 {
				start := time.Now()
				err := s.Accept(pending(fmt.Sprintf("x%d", i), t0))
				if took := time.Since(start); !errors.Is(err, ErrDiskFull) || took > 100*time.Millisecond {
					t.Fatalf("accept while broken: %v after %s", err, took)
				}
			}
			if _, err := s.Decide("a", session.StatusAllowed, "", session.ByAuthz, later); !errors.Is(err, ErrUnavailable) {
				t.Errorf("decide while broken: %v", err)
			}
			if err := s.Writable(); !errors.Is(err, ErrDiskFull) {
				t.Errorf("Writable while broken = %v", err)
			}
			if err := s.Health(); err == nil || !strings.Contains(err.Error(), "writes fail since") {
				t.Errorf("Health while broken = %v", err)
			}
			// Reads go on, from the read-only open, with what was durable
			// before the fault.
			testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
				for id, want := range before {
					got, err := s.Get(id)
					if err != nil {
						return err
					}
					if got.State != want.State || got.CallbackAttempts != want.CallbackAttempts {
						return fmt.Errorf("%s: %s, want %s", id, formatRecord(got), formatRecord(want))
					}
				}
				return nil
			})
			// (The failed Pebble showed the failed write until the
			// recovery retired it, at once; the read-only open does not.)
			testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
				if n, err := s.List("", "", 0); err != nil || len(n) != 4 {
					return fmt.Errorf("%d records, %v", len(n), err)
				}
				return nil
			})
			if f := s.WriteFailures(); f[CauseDiskFull] < 50 {
				t.Errorf("write failures %v, want at least 50 disk_full", f)
			}

			d.on.Store(false)
			testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, s.Writable)
			if err := s.Health(); err != nil {
				t.Errorf("Health after recovery: %v", err)
			}
			for id, want := range before {
				if got, err := s.Get(id); err != nil || got.State != want.State {
					t.Errorf("%s after recovery: %s %v, want %s", id, formatRecord(got), err, want.State)
				}
			}
			if n := s.Count(""); n != 4 {
				t.Errorf("Count after recovery = %d, want 4 (the refused writes left nothing)", n)
			}
			if err := tc.write(s); err != nil {
				t.Fatalf("%s after recovery: %v", tc.name, err)
			}
			tc.check(t, s)
			if exits.Load() != 0 {
				t.Error("the process would have exited")
			}
			if n := len(sink.lines("store write failed")); n != 1 {
				t.Errorf("%d lines about the fault, want 1", n)
			}
			// The store logs its recovery just after it takes writes again.
			testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
				if n := len(sink.lines("store recovered")); n != 1 {
					return fmt.Errorf("%d lines about the recovery, want 1", n)
				}
				return nil
			})
		})
	}
}

// Each cause is classified: ENOSPC is disk_full, EIO io, EROFS read_only.
func TestFaultCauses(t *testing.T) {
	for _, tc := range []struct {
		err   error
		cause string
	}{{syscall.ENOSPC, CauseDiskFull}, {syscall.EIO, CauseIO}, {syscall.EROFS, CauseReadOnly}} {
		t.Run(tc.cause, func(t *testing.T) {
			d := &diskFault{err: tc.err}
			s, _, _ := openWithFault(t, d, nil)
			mustAccept(t, s, "a")
			d.on.Store(true)
			if err := s.Accept(pending("b", t0)); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("accept = %v", err)
			}
			if err := s.Accept(pending("c", t0)); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrDiskFull) != (tc.cause == CauseDiskFull) {
				t.Fatalf("refused accept = %v", err)
			}
			if f := s.WriteFailures(); f[tc.cause] != 2 {
				t.Errorf("failures %v, want 2 %s", f, tc.cause)
			}
			if err := s.Health(); err == nil || (tc.cause != CauseDiskFull && !strings.Contains(err.Error(), tc.cause)) {
				t.Errorf("Health = %v, want the cause %s", err, tc.cause)
			}
			d.on.Store(false)
			testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, s.Writable)
			mustAccept(t, s, "d")
		})
	}
	s := mustOpen(t, memConfig())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Accept(pending("a", t0)); !errors.Is(err, ErrClosing) {
		t.Fatal(err)
	}
	if f := s.WriteFailures(); f[CauseClosing] != 1 {
		t.Errorf("failures after Close %v, want 1 closing", f)
	}
}

// While the fault lasts, the recovery probes with a pause that doubles up
// to recoverMax, and holds no lock while it waits: reads answer at once
// all along.
func TestRecoveryBacksOffWithoutBlockingReads(t *testing.T) {
	d := &diskFault{err: syscall.ENOSPC}
	s, sink, _ := openWithFault(t, d, nil)
	mustAccept(t, s, "a")
	d.on.Store(true)
	if err := s.Accept(pending("b", t0)); !errors.Is(err, ErrDiskFull) {
		t.Fatal(err)
	}
	// Read while the recovery probes at least 8 times.
	var slowest time.Duration
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		start := time.Now()
		_, err := s.Get("a")
		slowest = max(slowest, time.Since(start))
		if err != nil && !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get: %v", err)
		}
		if n := d.probes.Load(); n < 8 {
			return fmt.Errorf("%d probes", n)
		}
		return nil
	})
	if slowest > 100*time.Millisecond {
		t.Errorf("a read took %s while the store recovered", slowest)
	}
	d.probesAt.Lock()
	at := append([]time.Time(nil), d.probesAt.at...)
	d.probesAt.Unlock()
	// A timer never fires early: each pause is at least recoverMin doubled,
	// up to recoverMax.
	want := 5 * time.Millisecond
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < want {
			t.Errorf("pause %d: %s, want at least %s (gaps from %v)", i, gap, want, at)
		}
		want = min(2*want, 40*time.Millisecond)
	}
	// The repeated failed probes are logged at most once a second.
	if lines := sink.lines("still cannot write"); len(lines) > 2 {
		t.Errorf("%d lines about the failing probe in well under 2s", len(lines))
	}
	d.on.Store(false)
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, s.Writable)
}

// A flush that cannot write breaks the store like a failed commit (writes
// are refused, reads go on), does not end the process, is logged at most
// once a second, and the store recovers when the disk does, with nothing
// lost.
func TestFlushFaultDoesNotEndTheProcess(t *testing.T) {
	d := &diskFault{err: syscall.ENOSPC, names: func(base string) bool { return strings.HasSuffix(base, ".sst") }}
	s, sink, exits := openWithFault(t, d, nil)
	for i := range 100 {
		mustAccept(t, s, testID(0, i))
	}
	d.on.Store(true)
	s.mu.RLock()
	_, err := s.db.AsyncFlush()
	s.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s.Writable() == nil {
			return errors.New("still writable")
		}
		return nil
	})
	if err := s.Accept(pending("x", t0)); !errors.Is(err, ErrDiskFull) {
		t.Errorf("accept after a failed flush: %v", err)
	}
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error { _, err := s.Get(testID(0, 7)); return err })
	if exits.Load() != 0 {
		t.Fatal("a failed flush ended the process")
	}
	if n := len(sink.lines("pebble background error")); n > 2 {
		t.Errorf("%d lines about the failing flush, want at most one a second", n)
	}
	d.on.Store(false)
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, s.Writable)
	if n := s.Count(session.StatePending); n != 100 {
		t.Errorf("%d pending after recovery, want 100", n)
	}
	mustAccept(t, s, "y")
}

// When Pebble must stop (a MANIFEST write fails in a background flush: it
// calls Fatalf from its own goroutine), the process exits with code 1 and
// one clear line, and a restart on the same directory has every
// acknowledged request.
func TestBackgroundFatalExitsAndRestartLosesNothing(t *testing.T) {
	mem := vfs.NewCrashableMem()
	d := &diskFault{err: syscall.EIO, names: func(base string) bool { return strings.HasPrefix(base, "MANIFEST") }}
	sink := &logSink{}
	var code atomic.Int32
	code.Store(-1)
	s, err := Open(Config{Dir: "db", FS: errorfs.Wrap(mem, d), Logger: slog.New(slog.NewJSONHandler(sink, nil)),
		recoverMin: 5 * time.Millisecond, recoverMax: 40 * time.Millisecond, stuckAfter: time.Second,
		exit: func(c int) { code.Store(int32(c)) }})
	if err != nil {
		t.Fatal(err)
	}
	// Not closed: this Pebble is stopped in the middle of a flush, as a
	// process that exits would be.
	for i := range 50 {
		mustAccept(t, s, testID(0, i))
	}
	d.on.Store(true)
	s.mu.RLock()
	_, err = s.db.AsyncFlush()
	s.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if code.Load() < 0 {
			return errors.New("no exit")
		}
		return nil
	})
	if c := code.Load(); c != 1 {
		t.Errorf("exit code %d, want 1", c)
	}
	if lines := sink.lines("pebble cannot continue"); len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["err"]), "MANIFEST") {
		t.Errorf("exit lines %v, want one naming the MANIFEST write", lines)
	}

	restarted := mustOpen(t, Config{Dir: "db", FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger()})
	for i := range 50 {
		if _, err := restarted.Get(testID(0, i)); err != nil {
			t.Errorf("acknowledged %s lost: %v", testID(0, i), err)
		}
	}
}

// faultLog writes one line per key per interval, and the next line counts
// the repeats it suppressed.
func TestFaultLogOncePerInterval(t *testing.T) {
	sink := &logSink{}
	clock := newFakeClock(t0)
	f := newFaultLog(slog.New(slog.NewJSONHandler(sink, nil)), time.Second, clock.now)
	for range 5 {
		f.Log(slog.LevelError, "k", "disk full")
		clock.advance(100 * time.Millisecond)
	}
	f.Log(slog.LevelError, "other", "another fault")
	clock.advance(time.Second)
	f.Log(slog.LevelError, "k", "disk full")
	lines := sink.lines("disk full")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %v", len(lines), lines)
	}
	if _, ok := lines[0]["suppressed"]; ok {
		t.Errorf("first line %v counts suppressed repeats", lines[0])
	}
	if lines[1]["suppressed"] != float64(4) {
		t.Errorf("second line %v, want suppressed=4", lines[1])
	}
	if len(sink.lines("another fault")) != 1 {
		t.Error("a line with another key was suppressed")
	}
}
