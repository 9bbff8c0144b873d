package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// sessionPath is the public API's endpoint; the ceiling serves the same one.
const sessionPath = "/charge_point/session/"

// LoadConfig is the load a workload applies. Both workloads of a run get the
// same one.
type LoadConfig struct {
	// Concurrency is the number of workers, and of connections.
	Concurrency int
	// Duration bounds the load in time; 0: only Requests bounds it.
	Duration time.Duration
	// Requests bounds the number of requests sent; 0: only Duration bounds it.
	Requests int64
	// Rate, when > 0, sends requests open loop at this many per second;
	// 0: closed loop.
	Rate float64
	// Timeout bounds one request.
	Timeout time.Duration
}

// Validate reports what is wrong with c.
func (c LoadConfig) Validate() error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency)
	case c.Duration < 0 || c.Requests < 0 || c.Rate < 0:
		return errors.New("duration, requests and rate must not be negative")
	case c.Duration == 0 && c.Requests == 0:
		return errors.New("give a duration, a number of requests, or both")
	case c.Timeout <= 0:
		return fmt.Errorf("timeout %s: must be positive", c.Timeout)
	}
	return nil
}

// loadResult is what the generator saw.
type loadResult struct {
	Sent     int64
	Accepted int64
	// Errors counts failures by kind: "http_<code>" for another status,
	// "transport_<kind>" for no answer. Examples holds the first of each
	// kind (the body of an HTTP error, the error text of a transport one).
	Errors   map[string]int64
	Examples map[string]string
	Elapsed  time.Duration
	Ack      *histogram
	// Timeline has every 202 by the second it was read in.
	Timeline *timeline
}

// onAccepted is told of every 202, with its body (valid only during the
// call) and when it was read.
type onAccepted func(body []byte, at time.Time)

// runLoad sends body to http://addr/charge_point/session/ as cfg says and
// returns once every worker has stopped: after cfg.Duration (plus at most
// one cfg.Timeout) or cfg.Requests requests. The load starts at tl's start,
// which should be just now, and its 202s are recorded in tl (nil: a
// timeline starting now).
func runLoad(cfg LoadConfig, addr string, body []byte, accepted onAccepted, tl *timeline) loadResult {
	return runLoadHooks(cfg, addr, body, accepted, nil, tl)
}

// loadHooks let a workload vary each request and see each 202 with its
// sequence number (the burst workload). Closed loop only.
type loadHooks struct {
	// prepare sets the body of request seq (0-based, in the order the
	// requests are claimed) on req, just before it is sent. Its result
	// (a tag) is handed to accepted with the request's 202.
	prepare func(seq int64, req *fasthttp.Request) bool
	// accepted is told of every 202: the request's seq and tag, its body
	// (valid only during the call), when it was read and the ack latency.
	accepted func(seq int64, tag bool, body []byte, at time.Time, lat time.Duration)
}

// runLoadHooks is runLoad with hooks (nil: none).
func runLoadHooks(cfg LoadConfig, addr string, body []byte, accepted onAccepted, hooks *loadHooks, tl *timeline) loadResult {
	if tl == nil {
		tl = newTimeline(time.Now())
	}
	client := &fasthttp.HostClient{
		Addr:                      addr,
		Name:                      "chargeauth-bench",
		MaxConns:                  cfg.Concurrency,
		MaxIdemponentCallAttempts: 1, // a retried POST would be a second request
		ReadTimeout:               cfg.Timeout,
		WriteTimeout:              cfg.Timeout,
	}
	defer client.CloseIdleConnections()

	g := &generator{cfg: cfg, client: client, uri: "http://" + addr + sessionPath, body: body,
		accepted: accepted, hooks: hooks, ack: newHistogram(), tl: tl}
	g.errs.n = map[string]int64{}
	g.errs.example = map[string]string{}

	start := tl.start
	var end time.Time
	if cfg.Duration > 0 {
		end = start.Add(cfg.Duration)
	}
	var wg sync.WaitGroup
	if cfg.Rate > 0 {
		due := make(chan time.Time, cfg.Concurrency)
		for range cfg.Concurrency {
			wg.Go(func() { g.openWorker(due) })
		}
		g.dispatch(due, start, end)
		close(due)
	} else {
		for range cfg.Concurrency {
			wg.Go(func() { g.closedWorker(end) })
		}
	}
	wg.Wait()
	return loadResult{
		Sent: g.sent.Load(), Accepted: g.acks.Load(),
		Errors: g.errs.n, Examples: g.errs.example,
		Elapsed: time.Since(start), Ack: g.ack, Timeline: tl,
	}
}

type generator struct {
	cfg      LoadConfig
	client   *fasthttp.HostClient
	uri      string
	body     []byte
	accepted onAccepted
	hooks    *loadHooks
	ack      *histogram
	tl       *timeline

	issued atomic.Int64 // requests claimed against cfg.Requests
	sent   atomic.Int64
	acks   atomic.Int64
	errs   struct {
		sync.Mutex
		n       map[string]int64
		example map[string]string
	}
}

// claim reports whether one more request may be sent, and its sequence
// number.
func (g *generator) claim() (int64, bool) {
	seq := g.issued.Add(1) - 1
	return seq, g.cfg.Requests == 0 || seq < g.cfg.Requests
}

// closedWorker sends one request after another until end or the budget.
func (g *generator) closedWorker(end time.Time) {
	req, resp := g.newRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for {
		if !end.IsZero() && !time.Now().Before(end) {
			return
		}
		seq, ok := g.claim()
		if !ok {
			return
		}
		tag := false
		if g.hooks != nil && g.hooks.prepare != nil {
			tag = g.hooks.prepare(seq, req)
		}
		g.do(req, resp, time.Now(), seq, tag)
	}
}

// openWorker sends one request per due time it receives; latency counts
// from the due time, so time spent waiting for a free worker is included.
func (g *generator) openWorker(due <-chan time.Time) {
	req, resp := g.newRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for at := range due {
		g.do(req, resp, at, -1, false)
	}
}

// dispatch hands out due times at cfg.Rate from start until end or the
// budget. When every worker is busy it blocks; the due times it then hands
// out are late, and that lateness is part of the latency measured.
func (g *generator) dispatch(due chan<- time.Time, start, end time.Time) {
	var stop <-chan time.Time
	if !end.IsZero() {
		t := time.NewTimer(time.Until(end))
		defer t.Stop()
		stop = t.C
	}
	for i := int64(0); ; i++ {
		at := start.Add(time.Duration(float64(i) * float64(time.Second) / g.cfg.Rate))
		if !end.IsZero() && !at.Before(end) {
			return
		}
		if _, ok := g.claim(); !ok {
			return
		}
		if wait := time.Until(at); wait > 0 {
			select {
			case <-time.After(wait):
			case <-stop:
				return
			}
		}
		select {
		case due <- at:
		case <-stop:
			return
		}
	}
}

func (g *generator) newRequest() *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI(g.uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBody(g.body)
	return req
}

// do sends one request and records its outcome; from is when it was due,
// seq and tag are passed to the hooks (closed loop).
func (g *generator) do(req *fasthttp.Request, resp *fasthttp.Response, from time.Time, seq int64, tag bool) {
	g.sent.Add(1)
	err := g.client.DoTimeout(req, resp, g.cfg.Timeout)
	now := time.Now()
	if err != nil {
		g.fail("transport_"+transportKind(err), err.Error())
		return
	}
	if code := resp.StatusCode(); code != fasthttp.StatusAccepted {
		g.fail("http_"+strconv.Itoa(code), string(resp.Body()))
		return
	}
	lat := now.Sub(from)
	g.ack.Record(lat)
	g.tl.ack(now, lat)
	g.acks.Add(1)
	if g.accepted != nil {
		g.accepted(resp.Body(), now)
	}
	if g.hooks != nil && g.hooks.accepted != nil {
		g.hooks.accepted(seq, tag, resp.Body(), now, lat)
	}
}

func (g *generator) fail(kind, example string) {
	const maxExample = 300
	if len(example) > maxExample {
		example = example[:maxExample] + "..."
	}
	g.errs.Lock()
	defer g.errs.Unlock()
	g.errs.n[kind]++
	if _, ok := g.errs.example[kind]; !ok {
		g.errs.example[kind] = example
	}
}

// transportKind names a client error for the report.
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no_free_conns"
	case errors.Is(err, fasthttp.ErrConnectionClosed):
		return "conn_closed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "conn_reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	default:
		return "other"
	}
}

// reqID is a request id (a UUID) as 16 bytes: a compact map key.
type reqID [16]byte

// parseID parses a UUID in 8-4-4-4-12 hex form.
func parseID(s []byte) (reqID, bool) {
	var id reqID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	j := 0
	for i := 0; i < len(s); i += 2 {
		if s[i] == '-' {
			i--
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return id, false
		}
		id[j] = hi<<4 | lo
		j++
	}
	return id, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// jsonString returns the value of the first "key":"value" in a flat JSON
// object written without spaces (as chargeauth writes its 202 and its
// callbacks), or nil.
func jsonString(body []byte, key string) []byte {
	pat := `"` + key + `":"`
	i := bytes.Index(body, []byte(pat))
	if i < 0 {
		return nil
	}
	rest := body[i+len(pat):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}
