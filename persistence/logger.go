package persistence

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleLogger is pebble.Logger on slog. Its Errorf lines are rate-limited
// per format (a failing disk makes Pebble say the same thing thousands of
// times a second).
type pebbleLogger struct {
	l      *slog.Logger
	faults *faultLog
	// fatal ends the process (Store.fatal); nil: panic only.
	fatal func(why string)
}

var _ pebble.Logger = pebbleLogger{}

func (p pebbleLogger) Infof(format string, args ...any) { p.l.Info(fmt.Sprintf(format, args...)) }

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.faults == nil {
		p.l.Error(fmt.Sprintf(format, args...))
		return
	}
	p.faults.Log(slog.LevelError, "errorf:"+format, fmt.Sprintf(format, args...))
}

// Fatalf: Pebble's contract is that Fatalf does not return. Pebble calls it
// from a goroutine of ours, on a failed commit (the fsync failed) or at
// Open, and from its own background goroutines (a MANIFEST write that
// failed during a flush or compaction).
//
// Called from the store's own goroutine (a persistence frame is on the
// stack), it panics with a fatalPanic: Store.guard, openDB, closeDB and
// applyAtOpen recover it, and a failed commit becomes ErrUnavailable and a
// reopen, not a crash. Called from Pebble's background goroutine, nothing
// can recover it: it logs one clear line and exits the process with code 1
// (Store.fatal), as Pebble's default logger would, but with the reason in
// the log; the next start replays the WAL, which holds every acknowledged
// write.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	var err error
	for _, a := range args {
		if e, ok := a.(error); ok {
			err = e
			break
		}
	}
	if p.fatal != nil && !calledFromStore() {
		p.fatal("pebble: " + msg)
		// Only a test's exit returns: end this goroutine (its deferred
		// unlocks run) rather than crash the test binary.
		runtime.Goexit()
	}
	p.l.Error(msg, "fatal", true)
	panic(fatalPanic{msg: msg, err: err})
}

// thisPackage prefixes the function names of this package in a stack.
var thisPackage = reflect.TypeOf(fatalPanic{}).PkgPath() + "."

// calledFromStore reports whether a function of this package (other than
// the logger) is on the caller's stack: then a recover of ours will catch
// Fatalf's panic.
func calledFromStore() bool {
	var pcs [64]uintptr
	n := runtime.Callers(2, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, thisPackage) && !strings.Contains(f.Function, "pebbleLogger") &&
			!strings.Contains(f.Function, "calledFromStore") {
			return true
		}
		if !more {
			return false
		}
	}
}

// fatalPanic is what Fatalf panics with, in a goroutine of the store: the
// message, and the error among its arguments (for the fault's cause).
type fatalPanic struct {
	msg string
	err error
}

// isDiskFault reports whether err is the filesystem failing (out of space,
// read-only, an I/O error), as opposed to Pebble's own trouble.
func isDiskFault(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EIO)
}

// eventListener sends the Pebble events an operator acts on to l. The other
// events are left to Pebble's no-op defaults. A background error that is a
// disk fault (a flush or compaction that cannot write) breaks the store
// like a failed commit: writes are refused at once, and the recovery closes
// this Pebble, which stops it retrying the flush in a loop.
func (s *Store) eventListener(l *slog.Logger) *pebble.EventListener {
	bg := newFaultLog(l, s.cfg.logEvery, s.cfg.now)
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			bg.Log(slog.LevelError, "background:"+faultCause(err), "pebble background error", "err", err)
			if isDiskFault(err) && !s.cfg.ReadOnly {
				s.fail(err, "pebble: background write failed: "+err.Error())
			}
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			l.Error("pebble data corruption", "info", info.String())
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			bg.Log(slog.LevelWarn, "diskslow", "pebble disk slow", "path", info.Path, "op", info.OpType.String(), "duration_ms", ms(info.Duration), "info", info.String())
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			l.Warn("pebble low disk space", "avail_bytes", info.AvailBytes, "total_bytes", info.TotalBytes, "threshold_percent", info.PercentThreshold)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			l.Warn("pebble write stall begin", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			l.Info("pebble write stall end")
		},
	}
}

// ms is a duration as logs give it: milliseconds, a number (the key ends in
// _ms; README "Logs").
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
