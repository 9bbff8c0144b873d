package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/node"
)

// maxDrain bounds the wait for callbacks after the load.
const maxDrain = 60 * time.Second

// ChargeauthConfig configures the chargeauth workload: the whole service
// with an in-process authorization service and callback sink.
type ChargeauthConfig struct {
	Load LoadConfig
	// TempDir is where the store's fresh directory is made (and removed
	// after). It should be on the disk being measured. Default: os.TempDir().
	TempDir string
	// DrainTimeout bounds the wait, after the load, for a callback per 202.
	// Default and maximum: 60s.
	DrainTimeout time.Duration
	// AuthzConcurrency is passed to the service; 0: its default.
	AuthzConcurrency int
	// AuthzDelay, if set, holds every answer of the authorization service
	// that long: the service chargeauth protects is then the bottleneck,
	// as in production, and the accepts run ahead of the decisions (the
	// backlog waits on disk; what passes its deadline there is decided
	// unknown without a call). Default: 0 (answers at once).
	AuthzDelay time.Duration
	// Logger receives the service's and the authorization service's logs.
	// Default: discarded.
	Logger *slog.Logger
}

// benchACL allows benchToken everywhere.
var benchACL = []byte(`{"entries": [{"driver_token": "` + benchToken + `", "status": "active"}]}`)

// Run starts the authorization service, the callback sink and
// chargeauth on 127.0.0.1, applies the load, waits for the callbacks, stops
// everything and returns the report.
func (cfg ChargeauthConfig) Run() (_ *Report, err error) {
	if err := cfg.Load.Validate(); err != nil {
		return nil, err
	}
	if cfg.DrainTimeout <= 0 || cfg.DrainTimeout > maxDrain {
		cfg.DrainTimeout = maxDrain
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	dir, err := os.MkdirTemp(cfg.TempDir, "chargeauth-bench-")
	if err != nil {
		return nil, fmt.Errorf("chargeauth: data dir: %w", err)
	}
	defer os.RemoveAll(dir)

	list, err := acl.Parse(benchACL)
	if err != nil {
		return nil, fmt.Errorf("chargeauth: acl: %w", err)
	}
	authzLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chargeauth: authz listen: %w", err)
	}
	authzSrv := authz.NewServer(authz.Config{ACL: list, Logger: log})
	if d := cfg.AuthzDelay; d > 0 {
		slow := &fasthttp.Server{Name: "bench-slow-authz", Handler: func(ctx *fasthttp.RequestCtx) {
			time.Sleep(d)
			authzSrv.Handler(ctx)
		}}
		go slow.Serve(authzLn) //nolint:errcheck // ends at Shutdown
		defer slow.Shutdown()  //nolint:errcheck
	} else {
		go authzSrv.Serve(authzLn) //nolint:errcheck // returns nil after Shutdown
		defer authzSrv.Shutdown()  //nolint:errcheck
	}

	tr := newTracker()
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chargeauth: sink listen: %w", err)
	}
	sink := &fasthttp.Server{Handler: tr.callback, Name: "bench-sink", IdleTimeout: time.Minute}
	go sink.Serve(sinkLn) //nolint:errcheck // ends at Shutdown
	defer sink.Shutdown() //nolint:errcheck

	svc, err := node.Start(node.Config{
		Listen:                "127.0.0.1:0",
		AdminListen:           "127.0.0.1:0",
		DataDir:               dir,
		AuthzURL:              "http://" + authzLn.Addr().String(),
		AuthzConcurrency:      cfg.AuthzConcurrency,
		AllowPrivateCallbacks: true,
		ShutdownGrace:         5 * time.Second,
		Logger:                log,
	}.WithDefaults())
	if err != nil {
		return nil, fmt.Errorf("chargeauth: start: %w", err)
	}
	// Deferred last, so it runs first: the service stops before the sink
	// and the authorization service it talks to.
	defer func() {
		if cerr := svc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("chargeauth: close: %w", cerr)
		}
	}()

	body := requestBody("http://" + sinkLn.Addr().String() + "/callback")
	mem := startMemSampler()
	// Set before the load, so before any callback reaches the sink.
	tr.tl = newTimeline(time.Now())
	res := runLoad(cfg.Load, svc.Addr(), body, tr.acked, tr.tl)
	drainStart := time.Now()
	timedOut := !tr.waitAll(res.Accepted, cfg.DrainTimeout)
	drained := time.Since(drainStart)
	m := mem.Stop()

	select {
	case serr := <-svc.Err():
		return nil, fmt.Errorf("chargeauth: a listener stopped: %v", serr)
	default:
	}
	r := newReport("chargeauth", res)
	r.Memory = &m
	r.Callbacks = tr.report(res.Accepted, drained, timedOut)
	r.Timeline = tr.tl.points(true)
	return r, nil
}

// track is what the tracker knows of one request id. Times are nanoseconds
// since the tracker's base (monotonic); 0 means not yet.
type track struct {
	ack, recv int64
	callbacks int32
}

// tracker matches 202s to callbacks by request id (the callback's
// webhook-id) and measures the time from one to the other.
type tracker struct {
	base time.Time
	e2e  *histogram
	// tl is the load's timeline: the tracker adds the callbacks and the
	// end-to-end latencies, by the second each callback arrived in.
	tl *timeline
	mu struct {
		sync.Mutex
		ids       map[reqID]track
		matched   int64 // ids with both a 202 and a callback
		callbacks int64 // callback POSTs, duplicates included
		dups      int64 // callbacks beyond the first for an id
		dupAcks   int64 // 202s carrying an id already acknowledged
		badAcks   int64 // 202s without a request_id
		badIDs    int64 // callbacks without a valid webhook-id
		statuses  map[string]int64
	}
}

func newTracker() *tracker {
	t := &tracker{base: time.Now(), e2e: newHistogram()}
	t.mu.ids = make(map[reqID]track)
	t.mu.statuses = make(map[string]int64)
	return t
}

// since is at as nanoseconds since base, never 0.
func (t *tracker) since(at time.Time) int64 {
	return max(at.Sub(t.base).Nanoseconds(), 1)
}

// acked is the load generator's onAccepted.
func (t *tracker) acked(body []byte, at time.Time) {
	ns := t.since(at)
	id, ok := parseID(jsonString(body, "request_id"))
	t.mu.Lock()
	if !ok {
		t.mu.badAcks++
		t.mu.Unlock()
		return
	}
	tr := t.mu.ids[id]
	e2e := int64(-1)
	switch {
	case tr.ack != 0:
		t.mu.dupAcks++
	case tr.recv != 0:
		// The callback came before the 202 was read.
		tr.ack = ns
		t.mu.matched++
		e2e = tr.recv - ns
	default:
		tr.ack = ns
	}
	t.mu.ids[id] = tr
	t.mu.Unlock()
	if e2e != -1 {
		t.e2e.Record(time.Duration(e2e))
		t.tl.e2e(t.base.Add(time.Duration(tr.recv)), time.Duration(e2e))
	}
}

// callback is the sink's handler: it records the arrival and answers 204.
func (t *tracker) callback(ctx *fasthttp.RequestCtx) {
	now := time.Now()
	ns := t.since(now)
	t.tl.callback(now)
	id, ok := parseID(ctx.Request.Header.Peek("webhook-id"))
	status := jsonString(ctx.PostBody(), "status")
	t.mu.Lock()
	t.mu.callbacks++
	t.mu.statuses[string(status)]++
	e2e := int64(-1)
	if !ok {
		t.mu.badIDs++
	} else {
		tr := t.mu.ids[id]
		tr.callbacks++
		switch {
		case tr.callbacks > 1:
			t.mu.dups++
		case tr.ack != 0:
			tr.recv = ns
			t.mu.matched++
			e2e = ns - tr.ack
		default:
			tr.recv = ns
		}
		t.mu.ids[id] = tr
	}
	t.mu.Unlock()
	if e2e != -1 {
		t.e2e.Record(time.Duration(e2e))
		t.tl.e2e(now, time.Duration(e2e))
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// waitAll waits until want ids have both a 202 and a callback, for at most
// timeout. It reports whether they have.
func (t *tracker) waitAll(want int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		t.mu.Lock()
		n := t.mu.matched
		t.mu.Unlock()
		if n >= want {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CallbackReport is what the sink received.
type CallbackReport struct {
	// Received counts callback POSTs, duplicates included.
	Received int64 `json:"received"`
	// Distinct counts acknowledged request ids with at least one callback.
	Distinct int64 `json:"distinct"`
	// Lost is 202s minus Distinct: must be 0.
	Lost int64 `json:"lost"`
	// Duplicates counts callbacks beyond the first for an id (at-least-once
	// delivery allows them).
	Duplicates int64 `json:"duplicates"`
	// Unmatched counts ids with a callback but no 202 seen.
	Unmatched int64 `json:"unmatched"`
	// BadWebhookIDs counts callbacks without a valid webhook-id; BadAcks
	// 202s without a request_id; DuplicateAcks 202s with an id seen before.
	BadWebhookIDs int64 `json:"bad_webhook_ids"`
	BadAcks       int64 `json:"bad_acks"`
	DuplicateAcks int64 `json:"duplicate_acks"`
	// Statuses counts callbacks by the decision they carry.
	Statuses map[string]int64 `json:"statuses"`
	// DrainSeconds is how long the wait for callbacks after the load took;
	// DrainTimedOut, whether it gave up.
	DrainSeconds  float64 `json:"drain_s"`
	DrainTimedOut bool    `json:"drain_timed_out"`
	// E2E is 202 read -> callback received, by id.
	E2E Latency `json:"e2e"`
}

func (t *tracker) report(accepted int64, drained time.Duration, timedOut bool) *CallbackReport {
	t.mu.Lock()
	defer t.mu.Unlock()
	var unmatched int64
	for _, tr := range t.mu.ids {
		if tr.recv != 0 && tr.ack == 0 {
			unmatched++
		}
	}
	return &CallbackReport{
		Received: t.mu.callbacks, Distinct: t.mu.matched, Lost: accepted - t.mu.matched,
		Duplicates: t.mu.dups, Unmatched: unmatched,
		BadWebhookIDs: t.mu.badIDs, BadAcks: t.mu.badAcks, DuplicateAcks: t.mu.dupAcks,
		Statuses:     maps.Clone(t.mu.statuses),
		DrainSeconds: drained.Seconds(), DrainTimedOut: timedOut,
		E2E: t.e2e.Summary(),
	}
}

var errLost = errors.New("acknowledged requests without a callback")
