package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/node"
)

const (
	station = "123e4567-e89b-12d3-a456-426614174000"
	// Tokens the fake authorization service knows.
	tokAllowed    = "allowedDriverToken000001"
	tokNotAllowed = "blockedDriverToken000001"
	tokSlow       = "slowDriverToken000000001" // answers allowed, after the deadline
	tokInvalid    = "strangerDriverToken00001" // not in the fake's list
)

// serveLoopback starts a fasthttp server on 127.0.0.1:0 and stops it at
// cleanup. It returns the base URL.
func serveLoopback(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln) //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// fakeAuthz is a small real authorization service: allowed, not_allowed,
// invalid by token, and a slow token answered after slowDelay.
type fakeAuthz struct {
	URL       string
	slowDelay time.Duration

	mu       sync.Mutex
	calls    int
	answered []string // tokens answered, in order
}

func startFakeAuthz(t *testing.T, slowDelay time.Duration) *fakeAuthz {
	f := &fakeAuthz{slowDelay: slowDelay}
	f.URL = serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
		var req struct {
			StationID   string `json:"station_id"`
			DriverToken string `json:"driver_token"`
		}
		if string(ctx.Path()) != "/authorize" || json.Unmarshal(ctx.PostBody(), &req) != nil {
			ctx.SetStatusCode(400)
			return
		}
		f.mu.Lock()
		f.calls++
		f.mu.Unlock()
		status := "invalid"
		switch req.DriverToken {
		case tokAllowed:
			status = "allowed"
		case tokNotAllowed:
			status = "not_allowed"
		case tokSlow:
			time.Sleep(f.slowDelay) // slow on purpose: answers after the deadline
			status = "allowed"
		}
		ctx.SetContentType("application/json")
		fmt.Fprintf(ctx, `{"status":%q}`, status)
		f.mu.Lock()
		f.answered = append(f.answered, req.DriverToken)
		f.mu.Unlock()
	})
	return f
}

func (f *fakeAuthz) hasAnswered(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.answered {
		if a == token {
			return true
		}
	}
	return false
}

// callback is one request the receiver got.
type callback struct {
	Body        string
	ContentType string
	ID          string
	Timestamp   string
	Signature   string
	At          time.Time
}

// receiver records callbacks and answers 204 (or what answer returns).
type receiver struct {
	URL    string
	mu     sync.Mutex
	got    []callback
	answer func(n int) int // status code for the n-th callback (1-based)
	body   string          // the body of every answer (none if "")

	onCallback func(callback) // called for each callback before answering
}

func startReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.URL = serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
		cb := callback{
			Body:        string(ctx.PostBody()),
			ContentType: string(ctx.Request.Header.ContentType()),
			ID:          string(ctx.Request.Header.Peek("webhook-id")),
			Timestamp:   string(ctx.Request.Header.Peek("webhook-timestamp")),
			Signature:   string(ctx.Request.Header.Peek("webhook-signature")),
			At:          time.Now(),
		}
		if r.onCallback != nil {
			r.onCallback(cb)
		}
		r.mu.Lock()
		r.got = append(r.got, cb)
		n := len(r.got)
		answer, body := r.answer, r.body
		r.mu.Unlock()
		code := 204
		if answer != nil {
			code = answer(n)
		}
		ctx.SetStatusCode(code)
		if body != "" {
			ctx.SetBodyString(body)
		}
	})
	return r
}

func (r *receiver) byID(id string) []callback {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []callback
	for _, c := range r.got {
		if c.ID == id {
			out = append(out, c)
		}
	}
	return out
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// startService runs chargeauth on loopback ports over an in-memory store,
// returns once it is ready, and closes it at cleanup.
func startService(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:0"
	}
	if cfg.FS == nil {
		cfg.FS = vfs.NewMem()
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	cfg.ShutdownGrace = time.Second
	svc, err := node.Start(cfg.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

type response struct {
	code   int
	body   []byte
	header map[string]string
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

// do sends one request to base+path.
func do(t *testing.T, method, url, contentType string, body []byte) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod(method)
	if contentType != "" {
		req.Header.SetContentType(contentType)
	} else {
		req.Header.SetNoDefaultContentType(true) // really none
	}
	req.SetBody(body)
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	h := map[string]string{}
	for _, k := range resp.Header.PeekKeys() {
		h[strings.ToLower(string(k))] = string(resp.Header.PeekBytes(k))
	}
	return response{code: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: h}
}

func sessionBody(stationID, token, callbackURL string) []byte {
	b, _ := json.Marshal(map[string]string{"station_id": stationID, "driver_token": token, "callback_url": callbackURL})
	return b
}

// mustAccept posts a valid request and returns its request_id.
func mustAccept(t *testing.T, svc *node.Node, token, callbackURL string) string {
	t.Helper()
	r := do(t, "POST", "http://"+svc.Addr()+"/charge_point/session/", "application/json", sessionBody(station, token, callbackURL))
	if r.code != 202 {
		t.Fatalf("POST: %d %s, want 202", r.code, r.body)
	}
	id, _ := r.json(t)["request_id"].(string)
	if id == "" {
		t.Fatalf("no request_id in %s", r.body)
	}
	return id
}

// eventually polls f every interval until it returns nil, failing after
// timeout: the tree's one polling helper.
var eventually = testwait.Eventually

var errNoCallback = errorString("no callback yet")

type errorString string

func (e errorString) Error() string { return string(e) }
