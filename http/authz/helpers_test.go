package authz

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/acl"
)

const (
	station      = "123e4567-e89b-12d3-a456-426614174000"
	otherStation = "00000000-0000-4000-8000-000000000000"
)

// testNow is before the sample's station-bound token expires (2027) and
// after the expired one (2020).
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// listen opens a loopback listener on a free port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startServer runs an authz Server on loopback until the test ends and
// returns it with its base URL. A zero cfg.now becomes testNow.
func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.now == nil {
		cfg.now = func() time.Time { return testNow }
	}
	ln := listen(t)
	s := NewServer(cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

// startFake runs a bare fasthttp server with handler h until the test ends
// and returns its base URL: a stand-in for a misbehaving authz service.
func startFake(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln := listen(t)
	srv := &fasthttp.Server{Handler: h, ReadTimeout: time.Second, IdleTimeout: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		_ = ln.Close() // in case Serve had not registered ln yet
		<-done
	})
	return "http://" + ln.Addr().String()
}

func mustClient(t *testing.T, url string) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{URL: url})
	if err != nil {
		t.Fatalf("NewClient(%q): %v", url, err)
	}
	return c
}

func mustParseACL(t *testing.T, data string) *acl.ACL {
	t.Helper()
	a, err := acl.Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// do sends one raw request and returns the status code, body and Allow header.
func do(t *testing.T, method, url, body string) (int, string, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	if err := fasthttp.DoTimeout(req, resp, 2*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode(), string(resp.Body()), string(resp.Header.Peek(fasthttp.HeaderAllow))
}

// logBuffer is a concurrency-safe io.Writer for a test logger.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func debugLogger(w *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mustNoAnswer checks that err is a no-answer error whose text contains want.
func mustNoAnswer(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got an answer; want an error containing %q", want)
	}
	if !errors.Is(err, ErrNoAnswer) {
		t.Errorf("error %q does not wrap ErrNoAnswer", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q; want it to contain %q", err, want)
	}
}
