package webhook

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
)

// step is what a rawReceiver does with the next request on a connection.
type step int

const (
	answer     step = iota // read the request, answer 204, keep the connection
	closeIdle              // close the connection before reading anything
	readPart               // read a few bytes of the request, then close
	readAll                // read the whole request, then close without a word
	statusOnly             // read the whole request, write the status line, close
)

// rawReceiver is a callback receiver on a bare TCP listener, so that a test
// can close a connection at any byte. It counts the requests it saw begin
// (a request counts once its first byte was read).
type rawReceiver struct {
	url string

	mu     sync.Mutex
	script []step // steps still to take, in order; then answer
	posts  int
	closed chan struct{} // one value per closeIdle taken
}

func startRawReceiver(t *testing.T, script ...step) *rawReceiver {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rawReceiver{url: "http://" + ln.Addr().String() + "/cb", script: script, closed: make(chan struct{}, len(script))}
	var wg sync.WaitGroup
	var conns sync.Map
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, nil)
			wg.Go(func() {
				defer conns.Delete(c)
				defer c.Close()
				r.serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return r
}

func (r *rawReceiver) next() step {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.script) == 0 {
		return answer
	}
	s := r.script[0]
	r.script = r.script[1:]
	return s
}

func (r *rawReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.posts
}

func (r *rawReceiver) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		s := r.next()
		if s == closeIdle {
			c.Close() // before the test hears of it
			r.closed <- struct{}{}
			return
		}
		if _, err := br.Peek(1); err != nil {
			return // the client closed the connection
		}
		r.mu.Lock()
		r.posts++
		r.mu.Unlock()
		if s == readPart {
			var part [8]byte
			_, _ = io.ReadFull(br, part[:])
			return
		}
		if err := readRequest(br); err != nil {
			return
		}
		switch s {
		case readAll:
			return
		case statusOnly:
			_, _ = c.Write([]byte("HTTP/1.1 204 No Content\r\n"))
			return
		}
		if _, err := c.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n")); err != nil {
			return
		}
	}
}

// readRequest reads one request with a Content-Length body.
func readRequest(br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return err
	}
	if !bytes.HasPrefix([]byte(line), []byte("POST ")) {
		return fmt.Errorf("request line %q", line)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(h.Get("Content-Length"))
	if err != nil {
		return err
	}
	_, err = io.CopyN(io.Discard, br, int64(n))
	return err
}

// One attempt is at most one POST on the wire, wherever the receiver drops
// the connection: a stale pooled connection is tried again on a fresh one
// only when the receiver closed it before reading anything of the request.
func TestSendIsAtMostOnePost(t *testing.T) {
	for _, tc := range []struct {
		name string
		// script is what the receiver does with each request of the attempt
		// under test (then it answers); pooled puts an answered attempt first.
		script []step
		pooled bool
		// delivered: the attempt must succeed (on a fresh connection).
		delivered bool
	}{
		{name: "closed idle pooled connection", pooled: true, script: []step{closeIdle}, delivered: true},
		{name: "read all, no answer/pooled", pooled: true, script: []step{readAll, readAll, readAll}},
		{name: "read all, no answer/fresh", script: []step{readAll, readAll, readAll}},
		{name: "read part/pooled", pooled: true, script: []step{readPart, readPart, readPart}},
		{name: "read part/fresh", script: []step{readPart, readPart, readPart}},
		{name: "status line only/pooled", pooled: true, script: []step{statusOnly, statusOnly, statusOnly}},
		{name: "status line only/fresh", script: []step{statusOnly, statusOnly, statusOnly}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := tc.script
			if tc.pooled {
				script = append([]step{answer}, script...)
			}
			rcv := startRawReceiver(t, script...)
			s := newSender(t, Config{AllowPrivate: true})
			req := testRequest(rcv.url)
			if tc.pooled {
				mustDeliver(t, s.Send(soon(), testID, req, session.StatusAllowed))
				if n := rcv.count(); n != 1 {
					t.Fatalf("first attempt: receiver saw %d POSTs, want 1", n)
				}
				if tc.script[0] == closeIdle {
					select {
					case <-rcv.closed:
					case <-time.After(5 * time.Second):
						t.Fatal("receiver did not close the idle connection")
					}
				}
			}
			before := rcv.count()
			res := s.Send(soon(), testID, req, session.StatusAllowed)
			if n := rcv.count() - before; n > 1 {
				t.Errorf("one attempt reached the receiver as %d POSTs (result %+v)", n, res)
			}
			if tc.delivered {
				mustDeliver(t, res)
				return
			}
			if res.Err == nil || !res.Retryable || res.StatusCode != 0 {
				t.Errorf("want a retryable failure without a status, got %+v", res)
			}
		})
	}
}
