//go:build unix

package persistence

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// lockHolder asks the system which process holds the write lock Pebble
// took on path (fcntl F_GETLK), or 0 if it cannot tell. The descriptor is
// closed again; that releases no lock of this process, since this process
// does not hold it (its open just failed on it).
func lockHolder(path string) int {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return 0
	}
	return int(lk.Pid)
}
