//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package webhook

import (
	"errors"
	"io"
	"syscall"
)

// peekClosed peeks at one byte of the socket without waiting: nothing to
// read is a live idle connection; end of file, an error or a byte is not.
func peekClosed(fd uintptr) error {
	var b [1]byte
	for {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK):
			return nil
		case err != nil:
			return err
		case n == 0:
			return io.EOF
		default:
			return errIdleData
		}
	}
}
