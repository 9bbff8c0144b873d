package authz

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/internal/testwait"
)

func TestNewClientURL(t *testing.T) {
	tests := []struct {
		url, want string // want: the endpoint, or the error text
		ok        bool
	}{
		{"http://127.0.0.1:8081", "http://127.0.0.1:8081/authorize", true},
		{"http://127.0.0.1:8081/", "http://127.0.0.1:8081/authorize", true},
		{"https://authz.internal", "https://authz.internal/authorize", true},
		{"http://[::1]:8081/base/", "http://[::1]:8081/base/authorize", true},
		{"", "scheme must be http or https", false},
		{"127.0.0.1:8081", "127.0.0.1:8081", false},
		{"ftp://host", "scheme must be http or https", false},
		{"http://", "no host", false},
		{"http:///path", "no host", false},
		{"/authorize", "scheme must be http or https", false},
		{"http://user:pw@host", "user info", false},
		{"http://host/?a=b", "no query or fragment", false},
		{"http://host/#frag", "no query or fragment", false},
		{"http://host:port", "invalid port", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c, err := NewClient(ClientConfig{URL: tt.url})
			switch {
			case tt.ok && err != nil:
				t.Fatalf("NewClient: %v", err)
			case tt.ok && c.endpoint != tt.want:
				t.Errorf("endpoint %q; want %q", c.endpoint, tt.want)
			case !tt.ok && (err == nil || !strings.HasPrefix(err.Error(), "authz: ") || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("NewClient error %v; want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := NewClient(ClientConfig{URL: "http://host", MaxConns: -1}); err == nil {
		t.Error("MaxConns -1 accepted")
	}
}

func TestClientNoAnswer(t *testing.T) {
	tests := []struct {
		name    string
		handler fasthttp.RequestHandler
		want    string
	}{
		{"500", func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(500)
			ctx.SetBodyString(`{"status":"allowed"}`)
		}, "HTTP status 500"},
		{"204", func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(204) }, "HTTP status 204"},
		{"garbage body", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("<html>ok</html>") }, "bad body: invalid character"},
		{"empty body", func(ctx *fasthttp.RequestCtx) {}, "bad body: unexpected end of JSON input"},
		{"bad status", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"status":"maybe"}`) }, `bad status "maybe"`},
		{"no status", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"reason":"blocked"}`) }, `bad status ""`},
		{"status case", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"status":"Allowed"}`) }, `bad status "Allowed"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := startFake(t, tt.handler)
			st, reason, err := mustClient(t, url).Authorize(time.Now().Add(time.Second), station, "validDriverToken1234567")
			mustNoAnswer(t, err, tt.want)
			if st != "" || reason != "" {
				t.Errorf("an error came with %q, %q", st, reason)
			}
		})
	}
}

// A call still running at its deadline is not cut off then: the client
// waits for the service to finish, up to the grace, so the caller's slot
// stays taken meanwhile; the late answer counts as no answer. Past the
// grace the call is cut off.
func TestClientDeadline(t *testing.T) {
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(200 * time.Millisecond) // a slow service, on purpose: past the deadline
		ctx.SetBodyString(`{"status":"allowed"}`)
	})
	for _, tc := range []struct {
		grace    time.Duration
		min, max time.Duration // how long Authorize may take
	}{
		{grace: time.Second, min: 190 * time.Millisecond, max: 900 * time.Millisecond},          // waits for the late answer
		{grace: 10 * time.Millisecond, min: 50 * time.Millisecond, max: 150 * time.Millisecond}, // cut off
	} {
		c, err := NewClient(ClientConfig{URL: url, Grace: tc.grace})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, _, err = c.Authorize(start.Add(50*time.Millisecond), station, "validDriverToken1234567")
		elapsed := time.Since(start)
		mustNoAnswer(t, err, "")
		if !errors.Is(err, fasthttp.ErrTimeout) {
			t.Errorf("grace %v: error %q does not wrap fasthttp.ErrTimeout", tc.grace, err)
		}
		if elapsed < tc.min || elapsed > tc.max {
			t.Errorf("grace %v: Authorize returned after %v, want %v to %v", tc.grace, elapsed, tc.min, tc.max)
		}
	}

	// A deadline already past fails without a call.
	_, _, err := mustClient(t, url).Authorize(time.Now().Add(-time.Millisecond), station, "validDriverToken1234567")
	mustNoAnswer(t, err, "deadline passed before the call")
}

// A call the service drops without an answer is sent again only while its
// deadline has not passed: never a call for a request already too late.
func TestClientNoRetryAfterDeadline(t *testing.T) {
	for _, tc := range []struct {
		dropAfter time.Duration
		want      int64 // calls the service gets
	}{
		{dropAfter: 10 * time.Millisecond, want: 2},  // before the deadline: sent again
		{dropAfter: 300 * time.Millisecond, want: 1}, // after it: not
	} {
		ln := listen(t)
		var calls, conns, read atomic.Int64
		accepting := make(chan struct{})
		go func() {
			defer close(accepting)
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() {
					defer conn.Close()
					var req fasthttp.Request
					ok := req.Read(bufio.NewReader(conn)) == nil
					if ok {
						calls.Add(1)
					}
					read.Add(1)
					if ok {
						time.Sleep(tc.dropAfter) // on purpose: then close, without an answer
					}
				}()
			}
		}()
		_, _, err := mustClient(t, "http://"+ln.Addr().String()).Authorize(time.Now().Add(100*time.Millisecond), station, "validDriverToken1234567")
		ln.Close()
		mustNoAnswer(t, err, "")
		// Every connection the client made has been read: a retry, if
		// any, is counted.
		<-accepting
		testwait.Until(t, 5*time.Second, "every connection read", func() bool { return read.Load() == conns.Load() })
		if got := calls.Load(); got != tc.want {
			t.Errorf("dropped after %v: %d calls, want %d", tc.dropAfter, got, tc.want)
		}
	}
}

func TestClientConnectionRefused(t *testing.T) {
	ln := listen(t)
	url := "http://" + ln.Addr().String()
	ln.Close()
	_, _, err := mustClient(t, url).Authorize(time.Now().Add(time.Second), station, "validDriverToken1234567")
	mustNoAnswer(t, err, "connection refused")
}

// A service that closes each connection after one answer, without saying
// so ("Connection: close"), still gets answered: the client sends a call
// again once when the kept-alive connection it reused turns out dead.
func TestClientRetriesDeadKeptAliveConn(t *testing.T) {
	ln := listen(t)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			var req fasthttp.Request
			if err := req.Read(bufio.NewReader(conn)); err == nil {
				_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"status\":\"allowed\"}")
			}
			conn.Close()
		}
	}()
	c := mustClient(t, "http://"+ln.Addr().String())
	for i := range 5 {
		if _, _, err := c.Authorize(time.Now().Add(time.Second), station, "validDriverToken1234567"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

func TestAppendRequestBody(t *testing.T) {
	// The strings are written as encoding/json writes them (session.AppendJSONString).
	got := string(appendRequestBody(nil, "a\"b\\c\n\x1f\u2028", "é\xffz"))
	want := `{"station_id":"a\"b\\c\n\u001f\u2028","driver_token":"é\ufffdz"}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
