package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/node"
)

// The burst workload: N requests as fast as chargeauth acknowledges them,
// against a fake authorization service that answers "allowed" after a fixed
// delay; then the wait until every 202 has had its callback. It measures how
// fast the backlog drains compared with what the fake can answer, and
// whether memory stays flat while the backlog sits in the store.
//
// Each request carries its sequence number in its driver token
// (burstTokenPrefix + 10 digits), which the callback echoes: the sink finds
// the request's slot without a map, and checks that the callback's
// webhook-id is the request_id of that request's 202 (a 32-bit fingerprint
// of it) and the end-to-end latency from the time of the 202 the slot
// keeps. The slots are allocated once, 16 bytes per request, and reported
// as the bench's own bookkeeping.

const (
	burstTokenPrefix = "burstDriverToken"
	burstSeqDigits   = 10
	// defaultBurstDrain is -drain-timeout's default for the burst workload.
	defaultBurstDrain = 30 * time.Minute
	// defaultBurstDecisionTimeout is chargeauth's decision timeout in the
	// burst workload: far longer than any run, so no request reaches its
	// deadline and the drain measures decisions by the authorization
	// service, not timeouts.
	defaultBurstDecisionTimeout = time.Hour
	// drainClassifyAfter: a request counts as sent "during the drain" if it
	// is sent at least this long after the load began while some 202s
	// still lack their callback.
	drainClassifyAfter = time.Second
)

// BurstConfig configures the burst workload.
type BurstConfig struct {
	// Requests is N, the size of the burst.
	Requests int64
	// Concurrency is the load generator's workers (closed loop) and
	// connections. Default 64.
	Concurrency int
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration
	// TempDir is the parent of the store's fresh directory. Default:
	// os.TempDir().
	TempDir string
	// DrainTimeout bounds the wait for callbacks after the load.
	// Default 30m.
	DrainTimeout time.Duration
	// DecisionTimeout is chargeauth's. Default 1h: nothing times out.
	DecisionTimeout time.Duration
	// AuthzConcurrency is chargeauth's. Default 64.
	AuthzConcurrency int
	// MaxInflight is chargeauth's; 0: its default (10000).
	MaxInflight int
	// FakeDelay is how long the fake authorization service sleeps before
	// it answers. Default 1ms.
	FakeDelay time.Duration
	// FakeProbe is how long the fake's capacity is measured, at
	// FakeProbeConcurrency. Defaults 3s and 64.
	FakeProbe            time.Duration
	FakeProbeConcurrency int
	// HeapProfile, if set, is written (pprof heap profile) when the Go heap
	// reaches a new peak (at least 5% above the last one written, at most
	// every 2s), so it shows what the heap holds near its peak.
	HeapProfile string
	// Progress receives a summary line every 5s. Default: discarded.
	Progress io.Writer
	// Logger receives the service's logs. Default: discarded.
	Logger *slog.Logger
}

func (c *BurstConfig) setDefaults() {
	c.Concurrency = cmp.Or(c.Concurrency, 64)
	c.Timeout = cmp.Or(c.Timeout, 10*time.Second)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, defaultBurstDrain)
	c.DecisionTimeout = cmp.Or(c.DecisionTimeout, defaultBurstDecisionTimeout)
	c.AuthzConcurrency = cmp.Or(c.AuthzConcurrency, 64)
	c.FakeDelay = cmp.Or(c.FakeDelay, time.Millisecond)
	c.FakeProbe = cmp.Or(c.FakeProbe, 3*time.Second)
	c.FakeProbeConcurrency = cmp.Or(c.FakeProbeConcurrency, 64)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Validate reports what is wrong with c (after defaults).
func (c *BurstConfig) Validate() error {
	switch {
	case c.Requests < 1 || c.Requests > 1e9:
		return fmt.Errorf("burst %d: must be in [1, 1e9]", c.Requests)
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency)
	case c.Timeout <= 0 || c.DrainTimeout <= 0 || c.DecisionTimeout <= 0 || c.FakeDelay < 0 || c.FakeProbe <= 0:
		return errors.New("timeouts, delays and durations must be positive")
	case c.AuthzConcurrency < 1 || c.FakeProbeConcurrency < 1 || c.MaxInflight < 0:
		return errors.New("concurrencies must be at least 1 (max inflight: 0 for the default)")
	}
	return nil
}

// BurstReport is the burst workload's JSON report.
type BurstReport struct {
	Workload   string          `json:"workload"`
	StartedAt  time.Time       `json:"started_at"`
	GoVersion  string          `json:"go_version"`
	GOOS       string          `json:"goos"`
	GOARCH     string          `json:"goarch"`
	NumCPU     int             `json:"num_cpu"`
	GOMAXPROCS int             `json:"gomaxprocs"`
	Config     burstConfigJSON `json:"config"`
	Fake       FakeCapacity    `json:"fake_capacity"`
	// FakeCallsDuringRun counts the calls the fake answered while
	// chargeauth ran (one per decision, plus any retries).
	FakeCallsDuringRun int64 `json:"fake_calls_during_run"`

	Sent           int64             `json:"requests_sent"`
	Accepted       int64             `json:"accepted"`
	Errors         map[string]int64  `json:"errors"`
	ErrorTotal     int64             `json:"error_total"`
	ErrorExamples  map[string]string `json:"error_examples,omitempty"`
	LoadSeconds    float64           `json:"load_s"`
	AcceptedPerSec float64           `json:"accepted_per_s"`
	// Ack is request sent -> 202 read, every request; AckDuringDrain only
	// those sent at least 1s into the load while some 202s still lacked
	// their callback.
	Ack            Latency `json:"ack"`
	AckDuringDrain Latency `json:"ack_during_drain"`

	Callbacks BurstCallbacks `json:"callbacks"`
	Drain     DrainReport    `json:"drain"`
	Memory    BurstMemory    `json:"memory"`
	// Peaks of the 100ms samples: where the waiting requests were.
	Peaks BurstQueuePeaks `json:"queue_peaks"`
	// Series holds one sample per 100ms, from the start of the load to the
	// end of the drain.
	Series []BurstSample `json:"series"`
	// Timeline has a point per second since the load started, through the
	// drain: 202s and ack latencies, callbacks and end-to-end latencies
	// (timeline.go).
	Timeline []TimelinePoint `json:"timeline"`
	Notes    []string        `json:"notes"`
}

type burstConfigJSON struct {
	Requests             int64  `json:"requests"`
	Concurrency          int    `json:"concurrency"`
	Loop                 string `json:"loop"`
	RequestTimeout       string `json:"request_timeout"`
	AuthzConcurrency     int    `json:"authz_concurrency"`
	MaxInflight          int    `json:"max_inflight"`
	DecisionTimeout      string `json:"decision_timeout"`
	DrainTimeout         string `json:"drain_timeout"`
	FakeDelay            string `json:"fake_delay"`
	FakeProbe            string `json:"fake_probe"`
	FakeProbeConcurrency int    `json:"fake_probe_concurrency"`
	DataDirParent        string `json:"data_dir_parent"`
}

// FakeCapacity is the fake authorization service driven directly.
type FakeCapacity struct {
	Concurrency   int              `json:"concurrency"`
	Seconds       float64          `json:"seconds"`
	Answers       int64            `json:"answers"`
	Errors        map[string]int64 `json:"errors,omitempty"`
	AnswersPerSec float64          `json:"answers_per_s"`
	Latency       Latency          `json:"latency"`
}

// BurstCallbacks is what the sink received.
type BurstCallbacks struct {
	// Received counts callback POSTs, duplicates included.
	Received int64 `json:"received"`
	// Matched counts requests with both a 202 read and a callback.
	Matched int64 `json:"matched"`
	// Lost is 202s without a callback: must be 0.
	Lost int64 `json:"lost"`
	// Duplicates counts callbacks beyond the first for a request.
	Duplicates int64 `json:"duplicates"`
	// WrongWebhookID counts requests whose callback's webhook-id is not the
	// request_id of their 202.
	WrongWebhookID int64 `json:"wrong_webhook_id"`
	// Unmatched counts requests with a callback but no 202 read (e.g. the
	// client timed out).
	Unmatched int64 `json:"unmatched"`
	// BadCallbacks counts callbacks the sink could not place (no valid
	// webhook-id, or a driver token that is not the bench's).
	BadCallbacks int64 `json:"bad_callbacks"`
	// BadAcks counts 202s without a valid request_id.
	BadAcks  int64            `json:"bad_acks"`
	Statuses map[string]int64 `json:"statuses"`
}

// DrainReport is how fast the decisions (their callbacks) came.
type DrainReport struct {
	// FirstAckToLastCallbackS spans the whole run: first 202 read to last
	// first-callback received. RatePerSec is Matched over it.
	FirstAckToLastCallbackS float64 `json:"first_ack_to_last_callback_s"`
	RatePerSec              float64 `json:"rate_per_s"`
	// After the load: callbacks that arrived after the last 202 was read,
	// over the time from then to the last callback.
	AfterLoadCallbacks  int64   `json:"after_load_callbacks"`
	AfterLoadS          float64 `json:"after_load_s"`
	AfterLoadRatePerSec float64 `json:"after_load_rate_per_s"`
	// Ratios of the rates to the fake's capacity.
	RatioToFake          float64 `json:"ratio_to_fake"`
	AfterLoadRatioToFake float64 `json:"after_load_ratio_to_fake"`
	// WaitedS is the wait after the load; TimedOut, whether it gave up.
	WaitedS  float64 `json:"waited_s"`
	TimedOut bool    `json:"timed_out"`
	// LongestStallS is the longest span (in 100ms samples) during which
	// no callback arrived while some were owed.
	LongestStallS float64 `json:"longest_stall_s"`
}

// BurstMemory is the whole process's memory.
type BurstMemory struct {
	PeakHeapAllocBytes uint64 `json:"peak_heap_alloc_bytes"`
	PeakHeapInuseBytes uint64 `json:"peak_heap_inuse_bytes"`
	// PeakHeapLiveBytes is the highest live heap (as marked by a GC).
	PeakHeapLiveBytes uint64 `json:"peak_heap_live_bytes"`
	PeakRSSBytes      uint64 `json:"peak_rss_bytes"`
	RSSSource         string `json:"rss_source"`
	// PeakHeapAt is when the heap peaked, seconds since the load began.
	PeakHeapAtS float64 `json:"peak_heap_at_s"`
	// BaselineHeapBytes is HeapAlloc after a GC, with the service started
	// and before the load.
	BaselineHeapBytes uint64 `json:"baseline_heap_bytes"`
	// BenchBookkeepingBytes is the sink's per-request slots (16 bytes per
	// request, allocated before the load): part of every heap figure.
	BenchBookkeepingBytes uint64 `json:"bench_bookkeeping_bytes"`
	HeapProfile           string `json:"heap_profile,omitempty"`
	Note                  string `json:"note"`
}

// BurstQueuePeaks are the highest sampled counts: 202s still owed a
// callback, requests waiting in the store (backlog), live request actors,
// authorization calls in flight and callbacks pending in the sender.
type BurstQueuePeaks struct {
	Owed             int64 `json:"owed"`
	Backlog          int64 `json:"backlog"`
	Live             int64 `json:"live"`
	AuthzCalls       int64 `json:"authz_calls"`
	CallbacksPending int64 `json:"callbacks_pending"`
}

func queuePeaks(series []BurstSample) BurstQueuePeaks {
	var p BurstQueuePeaks
	for _, s := range series {
		p.Owed = max(p.Owed, s.Acked-s.Callbacks)
		p.Backlog = max(p.Backlog, s.Backlog)
		p.Live = max(p.Live, s.Live)
		p.AuthzCalls = max(p.AuthzCalls, s.AuthzCalls)
		p.CallbacksPending = max(p.CallbacksPending, s.CallbacksPending)
	}
	return p
}

// BurstSample is one 100ms sample.
type BurstSample struct {
	T         float64 `json:"t_s"`
	HeapAlloc uint64  `json:"heap_alloc"`
	HeapInuse uint64  `json:"heap_inuse"`
	// HeapLive is the heap the last GC found live (runtime/metrics
	// /gc/heap/live:bytes): HeapAlloc without the garbage made since.
	HeapLive uint64 `json:"heap_live"`
	RSS      uint64 `json:"rss"`
	Backlog  int64  `json:"backlog"`
	Live     int64  `json:"live"`
	// AuthzCalls are calls to the authorization service in flight;
	// CallbacksPending, decided requests whose callback is queued, waiting
	// for a retry or in flight (the engine's callback sender).
	AuthzCalls       int64 `json:"authz_calls"`
	CallbacksPending int64 `json:"callbacks_pending"`
	Acked            int64 `json:"acked"`
	Callbacks        int64 `json:"callbacks"`
}

// Run measures the fake, starts chargeauth and the sink, sends the burst,
// waits for the callbacks and returns the report.
func (cfg BurstConfig) Run() (_ *BurstReport, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	started := time.Now()
	out := cfg.Progress

	// The fake authorization service, and its capacity.
	var fakeCalls atomic.Int64
	fakeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("burst: fake listen: %w", err)
	}
	fake := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			time.Sleep(cfg.FakeDelay)
			fakeCalls.Add(1)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"status":"allowed"}`)
		},
		Name:        "bench-fake-authz",
		IdleTimeout: time.Minute,
	}
	go fake.Serve(fakeLn) //nolint:errcheck // ends at Shutdown
	defer fake.Shutdown() //nolint:errcheck
	fakeAddr := fakeLn.Addr().String()
	fmt.Fprintf(out, "measuring the fake authorization service (sleeps %s per call) at concurrency %d for %s...\n",
		cfg.FakeDelay, cfg.FakeProbeConcurrency, cfg.FakeProbe)
	fc := probeFake(fakeAddr, cfg.FakeProbeConcurrency, cfg.FakeProbe, cfg.Timeout)
	fmt.Fprintf(out, "fake capacity: %.0f answers/s (%d answers in %.2fs, p50 %.3fms, p99 %.3fms)\n",
		fc.AnswersPerSec, fc.Answers, fc.Seconds, fc.Latency.P50, fc.Latency.P99)
	if fc.Answers == 0 {
		return nil, fmt.Errorf("burst: the fake authorization service gave no answer: %v", fc.Errors)
	}
	debug.FreeOSMemory()

	// The sink and its bookkeeping.
	tr := newBurstTracker(cfg.Requests)
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("burst: sink listen: %w", err)
	}
	sink := &fasthttp.Server{Handler: tr.callback, Name: "bench-sink", IdleTimeout: time.Minute}
	go sink.Serve(sinkLn) //nolint:errcheck // ends at Shutdown
	defer sink.Shutdown() //nolint:errcheck

	dir, err := os.MkdirTemp(cfg.TempDir, "chargeauth-burst-")
	if err != nil {
		return nil, fmt.Errorf("burst: data dir: %w", err)
	}
	defer os.RemoveAll(dir)

	svc, err := node.Start(node.Config{
		Listen:                "127.0.0.1:0",
		AdminListen:           "127.0.0.1:0",
		DataDir:               dir,
		AuthzURL:              "http://" + fakeAddr,
		AuthzConcurrency:      cfg.AuthzConcurrency,
		MaxInflight:           cfg.MaxInflight,
		DecisionTimeout:       cfg.DecisionTimeout,
		AllowPrivateCallbacks: true,
		ShutdownGrace:         5 * time.Second,
		Logger:                cfg.Logger,
	}.WithDefaults())
	if err != nil {
		return nil, fmt.Errorf("burst: start chargeauth: %w", err)
	}
	// Deferred last, so it runs first: the service stops before the sink
	// and the fake it talks to.
	defer func() {
		if cerr := svc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("burst: close chargeauth: %w", cerr)
		}
	}()
	eng := svc.Engine()
	fakeBefore := fakeCalls.Load()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc

	fmt.Fprintf(out, "burst of %d requests, %d workers closed loop; chargeauth: authz concurrency %d, max inflight %s, decision timeout %s (nothing times out: the drain is measured)\n",
		cfg.Requests, cfg.Concurrency, cfg.AuthzConcurrency, maxInflightText(cfg.MaxInflight), cfg.DecisionTimeout)
	fmt.Fprintln(out, "in-process: the load generator, the fake authorization service and the callback sink share this process's heap and CPUs with chargeauth")

	// The load.
	loadStart := time.Now()
	tr.base = loadStart
	tr.tl = newTimeline(loadStart)
	sampler := startBurstSampler(loadStart, tr, eng, out, cfg.HeapProfile)
	prefix, suffix := burstBodyParts("http://" + sinkLn.Addr().String() + "/callback")
	drainHist := newHistogram()
	hooks := &loadHooks{
		prepare: func(seq int64, req *fasthttp.Request) bool {
			var buf [256]byte
			b := append(buf[:0], prefix...)
			b = appendSeq(b, seq)
			b = append(b, suffix...)
			req.SetBody(b) // copies
			return time.Since(loadStart) >= drainClassifyAfter && tr.matched.Load() < tr.acked.Load()
		},
		accepted: func(seq int64, tag bool, body []byte, at time.Time, lat time.Duration) {
			tr.ack(seq, body, at)
			if tag {
				drainHist.Record(lat)
			}
		},
	}
	load := LoadConfig{Concurrency: cfg.Concurrency, Requests: cfg.Requests, Timeout: cfg.Timeout}
	res := runLoadHooks(load, svc.Addr(), nil, nil, hooks, tr.tl)
	loadEnd := time.Now()
	tr.markLoadEnd(loadEnd)
	fmt.Fprintf(out, "load done: %d sent, %d 202s in %.1fs (%.0f/s); waiting (at most %s) for the callbacks...\n",
		res.Sent, res.Accepted, res.Elapsed.Seconds(), float64(res.Accepted)/res.Elapsed.Seconds(), cfg.DrainTimeout)

	// The drain.
	timedOut, serr := tr.waitAll(res.Accepted, cfg.DrainTimeout, svc.Err())
	waited := time.Since(loadEnd)
	series, peaks := sampler.Stop()
	if serr != nil {
		return nil, fmt.Errorf("burst: a listener stopped: %v", serr)
	}

	r := &BurstReport{
		Workload: "burst", StartedAt: started.UTC(), GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Config: burstConfigJSON{
			Requests: cfg.Requests, Concurrency: cfg.Concurrency, Loop: "closed", RequestTimeout: cfg.Timeout.String(),
			AuthzConcurrency: cfg.AuthzConcurrency, MaxInflight: cmp.Or(cfg.MaxInflight, 10000),
			DecisionTimeout: cfg.DecisionTimeout.String(), DrainTimeout: cfg.DrainTimeout.String(),
			FakeDelay: cfg.FakeDelay.String(), FakeProbe: cfg.FakeProbe.String(), FakeProbeConcurrency: cfg.FakeProbeConcurrency,
			DataDirParent: cmp.Or(cfg.TempDir, os.TempDir()),
		},
		Fake:               fc,
		FakeCallsDuringRun: fakeCalls.Load() - fakeBefore,
		Sent:               res.Sent, Accepted: res.Accepted,
		Errors: res.Errors, ErrorExamples: res.Examples,
		LoadSeconds: res.Elapsed.Seconds(),
		Ack:         res.Ack.Summary(), AckDuringDrain: drainHist.Summary(),
		Series: series, Timeline: tr.tl.points(true),
	}
	for _, n := range res.Errors {
		r.ErrorTotal += n
	}
	if s := res.Elapsed.Seconds(); s > 0 {
		r.AcceptedPerSec = round1(float64(res.Accepted) / s)
	}
	r.Callbacks = tr.report()
	r.Peaks = queuePeaks(series)
	r.Drain = tr.drain(fc.AnswersPerSec, waited, timedOut, series)
	r.Memory = BurstMemory{
		PeakHeapAllocBytes: peaks.heapAlloc, PeakHeapInuseBytes: peaks.heapInuse, PeakHeapLiveBytes: peaks.heapLive, PeakRSSBytes: peaks.rss,
		RSSSource: peaks.rssSource, PeakHeapAtS: round3(peaks.heapAt), BaselineHeapBytes: baseline,
		BenchBookkeepingBytes: tr.bytes(), HeapProfile: peaks.profile,
		Note: "whole process: chargeauth, the load generator, the fake authorization service and the callback sink",
	}
	r.Notes = []string{
		"in-process: the load generator, the fake authorization service and the callback sink share the heap and the CPUs with chargeauth",
		fmt.Sprintf("decision timeout %s: no request reaches its deadline during the run, so the drain rate is the rate of decisions made by the (fake) authorization service", cfg.DecisionTimeout),
		"fake capacity: the fake driven directly with a fasthttp client at the same concurrency chargeauth calls it with, in the same process, before chargeauth starts",
		"drain rate: requests with a 202 and a callback over first 202 read -> last callback; after-load: callbacks after the last 202 over last 202 -> last callback",
		fmt.Sprintf("ack during drain: requests sent at least %s into the load while some 202s still lacked their callback", drainClassifyAfter),
		"peak RSS includes memory Pebble allocates outside the Go heap (memtables, block cache)",
	}
	return r, nil
}

func maxInflightText(n int) string {
	if n == 0 {
		return "10000 (default)"
	}
	return strconv.Itoa(n)
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// burstBodyParts returns the request body around the driver token's
// sequence digits.
func burstBodyParts(callbackURL string) (prefix, suffix []byte) {
	prefix = fmt.Appendf(nil, `{"station_id":%q,"driver_token":"%s`, benchStation, burstTokenPrefix)
	suffix = fmt.Appendf(nil, `","callback_url":%q}`, callbackURL)
	return prefix, suffix
}

// appendSeq appends seq as burstSeqDigits decimal digits.
func appendSeq(b []byte, seq int64) []byte {
	var d [burstSeqDigits]byte
	for i := burstSeqDigits - 1; i >= 0; i-- {
		d[i] = byte('0' + seq%10)
		seq /= 10
	}
	return append(b, d[:]...)
}

// parseSeq returns the sequence number in a bench driver token.
func parseSeq(token []byte) (int64, bool) {
	if len(token) != len(burstTokenPrefix)+burstSeqDigits || string(token[:len(burstTokenPrefix)]) != burstTokenPrefix {
		return 0, false
	}
	var n int64
	for _, c := range token[len(burstTokenPrefix):] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// probeFake drives the fake authorization service directly, closed loop,
// with conc workers for d, as chargeauth's client would call it.
func probeFake(addr string, conc int, d, timeout time.Duration) FakeCapacity {
	client := &fasthttp.HostClient{Addr: addr, Name: "bench-fake-probe", MaxConns: conc,
		MaxIdemponentCallAttempts: 1, ReadTimeout: timeout, WriteTimeout: timeout}
	defer client.CloseIdleConnections()
	body := fmt.Appendf(nil, `{"station_id":%q,"driver_token":%q}`, benchStation, benchToken)
	lat := newHistogram()
	var answers atomic.Int64
	var mu sync.Mutex
	errs := map[string]int64{}
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + addr + "/authorize")
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType("application/json")
			req.SetBody(body)
			for time.Now().Before(end) {
				t0 := time.Now()
				err := client.DoTimeout(req, resp, timeout)
				kind := ""
				switch {
				case err != nil:
					kind = "transport_" + transportKind(err)
				case resp.StatusCode() != fasthttp.StatusOK || string(jsonString(resp.Body(), "status")) != "allowed":
					kind = "http_" + strconv.Itoa(resp.StatusCode())
				}
				if kind != "" {
					mu.Lock()
					errs[kind]++
					mu.Unlock()
					continue
				}
				lat.Record(time.Since(t0))
				answers.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	fc := FakeCapacity{Concurrency: conc, Seconds: round3(el.Seconds()), Answers: answers.Load(), Latency: lat.Summary()}
	if len(errs) > 0 {
		fc.Errors = errs
	}
	if s := el.Seconds(); s > 0 {
		fc.AnswersPerSec = round1(float64(fc.Answers) / s)
	}
	return fc
}

// burstSlot is one request's bookkeeping: state bits (1: 202 read, 2: a
// callback received), 32-bit fingerprints of the 202's request_id and of
// the first callback's webhook-id (0: none), and when the 202 was read
// (ackTick).
type burstSlot struct {
	state, ackFP, cbFP, ackAt atomic.Uint32
}

// burstTick is the unit of burstSlot.ackAt: 10µs, so 32 bits span 11.9h.
const burstTick = 10 * time.Microsecond

// ackTick is ns (since the tracker's base) in burstTicks, plus 1 (0: none).
func ackTick(ns int64) uint32 {
	return uint32(min(ns/int64(burstTick)+1, math.MaxUint32))
}

// burstTracker matches 202s to callbacks through the sequence number in the
// driver token, with no per-request allocation.
type burstTracker struct {
	base  time.Time // the load's start
	slots []burstSlot
	// tl is the load's timeline: the tracker adds the callbacks and the
	// end-to-end latencies (by the second each callback arrived in).
	tl *timeline

	acked      atomic.Int64 // slots with a 202 read
	matched    atomic.Int64 // slots with a 202 and a callback
	callbacks  atomic.Int64 // callback POSTs
	dups       atomic.Int64
	badCB      atomic.Int64
	badAcks    atomic.Int64
	firstAck   atomic.Int64 // ns since base, 0: none yet
	lastCB     atomic.Int64 // ns since base of the last first-callback
	loadEnd    atomic.Int64 // ns since base; 0 until the load ends
	cbAtEnd    atomic.Int64 // first-callbacks before the load ended
	firstCBs   atomic.Int64 // first-callbacks (slots with a callback)
	allowed    atomic.Int64
	notAllowed atomic.Int64
	unknown    atomic.Int64
	invalid    atomic.Int64
	other      atomic.Int64
}

func newBurstTracker(n int64) *burstTracker {
	return &burstTracker{base: time.Now(), slots: make([]burstSlot, n)}
}

func (t *burstTracker) bytes() uint64 {
	return uint64(len(t.slots)) * uint64(unsafe.Sizeof(burstSlot{}))
}

func (t *burstTracker) since(at time.Time) int64 { return max(at.Sub(t.base).Nanoseconds(), 1) }

// fingerprint is 32 bits of a request id, never 0.
func fingerprint(id reqID) uint32 {
	h := uint32(2166136261)
	for _, b := range id {
		h = (h ^ uint32(b)) * 16777619
	}
	return h | 1
}

// ack records the 202 of request seq.
func (t *burstTracker) ack(seq int64, body []byte, at time.Time) {
	id, ok := parseID(jsonString(body, "request_id"))
	if !ok || seq < 0 || seq >= int64(len(t.slots)) {
		t.badAcks.Add(1)
		return
	}
	ns := t.since(at)
	t.firstAck.CompareAndSwap(0, ns)
	s := &t.slots[seq]
	s.ackFP.Store(fingerprint(id))
	s.ackAt.Store(ackTick(ns)) // before the state bit: callback reads it after
	old := s.state.Or(1)
	if old&1 != 0 {
		return // cannot happen: one 202 per request
	}
	t.acked.Add(1)
	if old&2 != 0 {
		t.matched.Add(1)
		// The callback came first: a latency of (clamped to) 1µs, in the
		// second of the 202 (the slot does not keep the callback's time).
		t.tl.e2e(at, 0)
	}
}

// callback is the sink's handler: it places the callback by the sequence
// number in its driver token and answers 204.
func (t *burstTracker) callback(ctx *fasthttp.RequestCtx) {
	at := time.Now()
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	t.callbacks.Add(1)
	t.tl.callback(at)
	body := ctx.PostBody()
	switch string(jsonString(body, "status")) {
	case "allowed":
		t.allowed.Add(1)
	case "not_allowed":
		t.notAllowed.Add(1)
	case "unknown":
		t.unknown.Add(1)
	case "invalid":
		t.invalid.Add(1)
	default:
		t.other.Add(1)
	}
	id, ok1 := parseID(ctx.Request.Header.Peek("webhook-id"))
	seq, ok2 := parseSeq(jsonString(body, "driver_token"))
	if !ok1 || !ok2 || seq >= int64(len(t.slots)) {
		t.badCB.Add(1)
		return
	}
	s := &t.slots[seq]
	if !s.cbFP.CompareAndSwap(0, fingerprint(id)) {
		t.dups.Add(1)
		return
	}
	old := s.state.Or(2)
	now := t.since(at)
	for {
		last := t.lastCB.Load()
		if now <= last || t.lastCB.CompareAndSwap(last, now) {
			break
		}
	}
	t.firstCBs.Add(1)
	if old&1 != 0 {
		t.matched.Add(1)
		t.tl.e2e(at, time.Duration(now-(int64(s.ackAt.Load())-1)*int64(burstTick)))
	}
}

func (t *burstTracker) markLoadEnd(at time.Time) {
	t.cbAtEnd.Store(t.firstCBs.Load())
	t.loadEnd.Store(t.since(at))
}

// waitAll waits until want requests have both a 202 and a callback, for at
// most timeout, or until a listener fails. It reports whether it gave up.
func (t *burstTracker) waitAll(want int64, timeout time.Duration, failed <-chan error) (bool, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for t.matched.Load() < want {
		select {
		case <-deadline.C:
			return true, nil
		case err := <-failed:
			return false, err
		case <-tick.C:
		}
	}
	return false, nil
}

func (t *burstTracker) report() BurstCallbacks {
	c := BurstCallbacks{
		Received: t.callbacks.Load(), Matched: t.matched.Load(), Duplicates: t.dups.Load(),
		BadCallbacks: t.badCB.Load(), BadAcks: t.badAcks.Load(),
		Statuses: map[string]int64{},
	}
	for k, v := range map[string]int64{"allowed": t.allowed.Load(), "not_allowed": t.notAllowed.Load(),
		"unknown": t.unknown.Load(), "invalid": t.invalid.Load(), "other": t.other.Load()} {
		if v > 0 {
			c.Statuses[k] = v
		}
	}
	for i := range t.slots {
		s := &t.slots[i]
		switch st := s.state.Load(); {
		case st == 1:
			c.Lost++
		case st == 2:
			c.Unmatched++
		case st == 3 && s.ackFP.Load() != s.cbFP.Load():
			c.WrongWebhookID++
		}
	}
	return c
}

func (t *burstTracker) drain(fakeRate float64, waited time.Duration, timedOut bool, series []BurstSample) DrainReport {
	d := DrainReport{WaitedS: round3(waited.Seconds()), TimedOut: timedOut}
	first, last, end := t.firstAck.Load(), t.lastCB.Load(), t.loadEnd.Load()
	if first > 0 && last > first {
		s := float64(last-first) / 1e9
		d.FirstAckToLastCallbackS = round3(s)
		d.RatePerSec = round1(float64(t.matched.Load()) / s)
	}
	d.AfterLoadCallbacks = t.firstCBs.Load() - t.cbAtEnd.Load()
	if end > 0 && last > end {
		s := float64(last-end) / 1e9
		d.AfterLoadS = round3(s)
		d.AfterLoadRatePerSec = round1(float64(d.AfterLoadCallbacks) / s)
	}
	if fakeRate > 0 {
		d.RatioToFake = round3(d.RatePerSec / fakeRate)
		d.AfterLoadRatioToFake = round3(d.AfterLoadRatePerSec / fakeRate)
	}
	// Longest run of samples with callbacks owed and none arriving.
	var stall, longest float64
	for i := 1; i < len(series); i++ {
		p, c := series[i-1], series[i]
		if c.Callbacks == p.Callbacks && c.Callbacks < c.Acked {
			stall += c.T - p.T
			longest = max(longest, stall)
		} else {
			stall = 0
		}
	}
	d.LongestStallS = round3(longest)
	return d
}
