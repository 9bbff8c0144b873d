package persistence

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrLocked: another process (or another Store in this one) holds the
// directory: Pebble's LOCK file is taken. Open returns it as a *LockedError.
var ErrLocked = errors.New("persistence: data directory in use")

// LockedError is Open's error when the directory is held. PID is the
// holder's process id when the system tells it (0 when it does not).
type LockedError struct {
	Dir string
	PID int
	Err error // what Pebble returned
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("data directory %s is in use by another chargeauth (pid %d)", e.Dir, e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by another chargeauth", e.Dir)
}

func (e *LockedError) Unwrap() []error { return []error{ErrLocked, e.Err} }

// openError is Open's error for what pebble.Open returned: a *LockedError
// when the LOCK file is held, the error wrapped otherwise.
func openError(cfg Config, err error) error {
	if locked(err) {
		e := &LockedError{Dir: cfg.Dir, Err: err}
		switch {
		case strings.Contains(err.Error(), "lock held by current process"):
			e.PID = os.Getpid()
		case cfg.FS == vfs.Default:
			e.PID = lockHolder(filepath.Join(cfg.Dir, "LOCK"))
		}
		return e
	}
	return fmt.Errorf("persistence: open %s: %w", cfg.Dir, err)
}

// locked reports whether err is Pebble failing to take its LOCK file. On
// Unix Pebble takes it with fcntl(F_SETLK) and returns that call's errno
// unwrapped (EAGAIN or EACCES: "a conflicting lock is held"); opening the
// file would fail with an *os.PathError instead. A second open in the same
// process fails before the system call, with its own message.
func locked(err error) bool {
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return false
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && (errno == syscall.EAGAIN || errno == syscall.EACCES) {
		return true
	}
	return strings.Contains(err.Error(), "lock held by current process")
}
