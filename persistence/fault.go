package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Causes of a store write failure, the label values of
// chargeauth_store_write_failures_total.
const (
	CauseDiskFull = "disk_full" // ENOSPC, or free space under Config.MinFreeDisk
	CauseIO       = "io"        // any other failed write (EIO, ...)
	CauseReadOnly = "read_only" // EROFS: the filesystem went read-only
	CauseClosing  = "closing"   // the store is closed or closing
)

// Causes lists every cause, in a fixed order.
var Causes = [...]string{CauseDiskFull, CauseIO, CauseReadOnly, CauseClosing}

func causeIndex(cause string) int {
	for i, c := range Causes {
		if c == cause {
			return i
		}
	}
	return 1 // io
}

// faultCause classifies a write error.
func faultCause(err error) string {
	switch {
	case err == nil:
		return CauseIO
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, ErrDiskFull):
		return CauseDiskFull
	case errors.Is(err, syscall.EROFS), errors.Is(err, pebble.ErrReadOnly):
		return CauseReadOnly
	case errors.Is(err, ErrClosing):
		return CauseClosing
	}
	return CauseIO
}

// fault is why the store cannot write now.
type fault struct {
	cause string
	since time.Time
	err   string
}

// faultError is the error every write returns while the store is broken: it
// wraps ErrUnavailable and, for a full disk, ErrDiskFull.
func (f *fault) error() error {
	if f.cause == CauseDiskFull {
		return fmt.Errorf("%w: %w: writes fail since %s: %s", ErrUnavailable, ErrDiskFull, f.since.Format(time.RFC3339), f.err)
	}
	return fmt.Errorf("%w (%s): writes fail since %s: %s", ErrUnavailable, f.cause, f.since.Format(time.RFC3339), f.err)
}

// countFailure counts a refused or failed write by its cause. nil and
// errors that are not about the store's ability to write (not found, wrong
// state) are not counted.
func (s *Store) countFailure(err error) {
	switch {
	case err == nil:
		return
	case errors.Is(err, ErrClosing):
		s.failures[causeIndex(CauseClosing)].Add(1)
	case errors.Is(err, ErrDiskFull):
		s.failures[causeIndex(CauseDiskFull)].Add(1)
	case errors.Is(err, ErrUnavailable):
		cause := CauseIO
		if f := s.fault.Load(); f != nil {
			cause = f.cause
		}
		s.failures[causeIndex(cause)].Add(1)
	}
}

// WriteFailures returns the number of writes refused or failed so far, by
// cause (see Causes): the counts of chargeauth_store_write_failures_total.
func (s *Store) WriteFailures() map[string]int64 {
	out := make(map[string]int64, len(Causes))
	for i, c := range Causes {
		out[c] = s.failures[i].Load()
	}
	return out
}

// Writable returns nil if the store takes writes now, ErrClosing after
// Close, or an error wrapping ErrUnavailable (and ErrDiskFull, for a full
// disk) while a failed write keeps it from writing. It does not look at the
// free-space floor, which only refuses new requests (see Health). It costs
// two atomic loads: callers may ask before work whose outcome must be
// stored (a callback attempt).
func (s *Store) Writable() error {
	if s.closing.Load() {
		return ErrClosing
	}
	if s.broken.Load() {
		if f := s.fault.Load(); f != nil {
			return f.error()
		}
		return ErrUnavailable
	}
	return nil
}

// Health is Writable plus the free-space floor: nil when the store can
// accept new requests. Its error says why not, for /readyz.
func (s *Store) Health() error {
	if err := s.Writable(); err != nil {
		return err
	}
	if s.cfg.ReadOnly {
		return nil
	}
	return s.disk.check()
}

// faultLog writes a line about a fault at most once per interval per key,
// and counts the repeats it suppressed in between: the next line carries
// them as "suppressed". A full disk fails thousands of writes a second; the
// log says so once a second.
type faultLog struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*faultLine
}

type faultLine struct {
	last       time.Time
	suppressed int64
}

func newFaultLog(l *slog.Logger, every time.Duration, now func() time.Time) *faultLog {
	return &faultLog{log: l, every: every, now: now, keys: make(map[string]*faultLine)}
}

// Log writes msg with args at level, unless a line with the same key was
// written less than f.every ago; it reports whether it wrote.
func (f *faultLog) Log(level slog.Level, key, msg string, args ...any) bool {
	now := f.now()
	f.mu.Lock()
	l := f.keys[key]
	if l == nil {
		if len(f.keys) > 1024 { // keys are a small fixed set; a bound anyway
			clear(f.keys)
		}
		l = &faultLine{}
		f.keys[key] = l
	}
	if !l.last.IsZero() && now.Sub(l.last) < f.every && now.Sub(l.last) >= 0 {
		l.suppressed++
		f.mu.Unlock()
		return false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	f.mu.Unlock()
	if n > 0 {
		args = append(args, slog.Int64("suppressed", n))
	}
	f.log.Log(context.Background(), level, msg, args...)
	return true
}
