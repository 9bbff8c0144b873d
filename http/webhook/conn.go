package webhook

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// One attempt is at most one POST on the wire (DESIGN.md, "Callback"). A
// receiver that sees a request twice would mostly dedupe on webhook-id, but
// a POST sent again after the receiver read it (or began to answer) is a
// duplicate the retry schedule did not plan. So fasthttp may send a request
// again, on another connection, only when nothing of it reached the
// receiver:
//
//   - a kept-alive connection is checked just before a request is written
//     on it; if the receiver has closed it (or reset it, or sent anything
//     unasked), the write fails with errNothingWritten and no byte leaves;
//   - a write that fails before its first byte went out fails with
//     errNothingWritten too.
//
// Every other error (a failed write after the first byte, no answer, part
// of an answer) ends the attempt: the caller's schedule tries again later.
// A receiver that closes a kept-alive connection just after the check, as
// the request is on its way, costs one failed attempt, not a duplicate.

// errNothingWritten marks an error after which no byte of the request had
// left: retryNothingWritten lets fasthttp resend only those.
var errNothingWritten = errors.New("webhook: connection unusable before any byte of the request was sent")

// errIdleData is the reason when a receiver sent bytes on an idle
// connection, where no answer was due.
var errIdleData = errors.New("unexpected bytes from the receiver on an idle connection")

// retryNothingWritten is fasthttp's RetryIfErr: resend only when no byte of
// the request was sent (fasthttp's MaxIdemponentCallAttempts bounds how
// often, see New).
func retryNothingWritten(_ *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
	return false, errors.Is(err, errNothingWritten)
}

// checkedConn is a dialed connection that knows where a request begins: a
// Write that follows a Read is the first write of a new request on a
// kept-alive connection (fasthttp writes a whole request, then reads a whole
// answer). Over TLS it sits under the tls.Conn, so it sees records, and the
// handshake's reads count as reads. fasthttp uses a connection from one
// goroutine at a time.
type checkedConn struct {
	net.Conn
	raw      syscall.RawConn // nil: the receiver's close cannot be seen ahead
	readLast bool            // the last call was a Read
	written  int             // bytes of the current request written
}

// dialChecked is the fasthttp DialTimeout function: dial (the guard), then
// a checkedConn around the connection.
func (s *Sender) dialChecked(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := s.dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	return newCheckedConn(c), nil
}

func newCheckedConn(c net.Conn) *checkedConn {
	cc := &checkedConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			cc.raw = raw
		}
	}
	return cc
}

func (c *checkedConn) Read(p []byte) (int, error) {
	c.readLast = true
	return c.Conn.Read(p)
}

func (c *checkedConn) Write(p []byte) (int, error) {
	if c.readLast {
		c.readLast = false
		c.written = 0
		if err := c.checkIdle(); err != nil {
			return 0, fmt.Errorf("%w: %w", errNothingWritten, err)
		}
	}
	n, err := c.Conn.Write(p)
	if err != nil && n == 0 && c.written == 0 && !errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: %w", errNothingWritten, err)
	}
	c.written += n
	return n, err
}

// checkIdle reports whether the receiver closed or reset the connection, or
// sent anything, while it was idle. It never blocks and never consumes a
// byte.
func (c *checkedConn) checkIdle() error {
	if c.raw == nil {
		return nil
	}
	var err error
	if cerr := c.raw.Control(func(fd uintptr) { err = peekClosed(fd) }); cerr != nil {
		return cerr
	}
	return err
}
