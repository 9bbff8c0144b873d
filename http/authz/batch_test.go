package authz

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

func mustBatchClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	cfg.Batch = true
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

// queued is how many calls wait in c's queue for a batch.
func queued(c *Client) int {
	c.batch.mu.Lock()
	defer c.batch.mu.Unlock()
	return len(c.batch.queue)
}

// items is how many calls one request to the service carries.
func items(ctx *fasthttp.RequestCtx) int {
	return bytes.Count(ctx.PostBody(), []byte(`"driver_token"`))
}

type answer struct {
	status session.Status
	reason string
	err    error
	took   time.Duration
}

// Calls that arrive while one is in flight go together in the next batch,
// and each caller gets the answer for its own token, from the real server's
// batch endpoint.
func TestBatchAnswersMapToCallers(t *testing.T) {
	const n = 40
	var entries []string
	for i := range n {
		status := "active"
		if i%3 == 1 {
			status = "blocked"
		}
		if i%3 == 2 {
			continue // not in the ACL: invalid
		}
		entries = append(entries, fmt.Sprintf(`{"driver_token":"mapDriverToken%08d","status":"%s"}`, i, status))
	}
	srv := NewServer(Config{ACL: mustParseACL(t, `{"entries":[`+strings.Join(entries, ",")+`]}`), now: func() time.Time { return testNow }})
	gate := make(chan struct{})
	var first atomic.Bool
	var mu sync.Mutex
	var sizes []int
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		sizes = append(sizes, items(ctx))
		mu.Unlock()
		if first.CompareAndSwap(false, true) {
			<-gate // the first call stays in flight until the others queue
		}
		srv.Handler(ctx)
	})
	c := mustBatchClient(t, ClientConfig{URL: url})

	answers := make([]answer, n)
	var wg sync.WaitGroup
	call := func(i int) {
		defer wg.Done()
		st, reason, err := c.Authorize(time.Now().Add(5*time.Second), station, fmt.Sprintf("mapDriverToken%08d", i))
		answers[i] = answer{status: st, reason: reason, err: err}
	}
	wg.Add(1)
	go call(0)
	testwait.Until(t, 5*time.Second, "the first call at the service", first.Load)
	for i := 1; i < n; i++ {
		wg.Add(1)
		go call(i)
	}
	testwait.Until(t, 5*time.Second, "the other calls queued", func() bool { return queued(c) == n-1 })
	close(gate)
	wg.Wait()

	for i, a := range answers {
		want, reason := session.StatusAllowed, ""
		switch i % 3 {
		case 1:
			want, reason = session.StatusNotAllowed, "blocked"
		case 2:
			want, reason = session.StatusInvalid, "unknown_token"
		}
		if a.err != nil || a.status != want || a.reason != reason {
			t.Errorf("caller %d: %q, %q, %v; want %q, %q", i, a.status, a.reason, a.err, want, reason)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != n-1 {
		t.Errorf("the service got requests of %v calls; want [1 %d]", sizes, n-1)
	}
}

// A call waiting for a batch while a slow one is in flight leaves at its
// own deadline with no answer, and is never sent.
func TestBatchSlowBatchDoesNotHoldCallerPastDeadline(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		calls.Add(1)
		<-release // on purpose: the service holds the first call
		ctx.SetBodyString(`{"status":"allowed"}`)
	})
	c := mustBatchClient(t, ClientConfig{URL: url})
	slow := make(chan answer, 1)
	go func() {
		st, _, err := c.Authorize(time.Now().Add(10*time.Second), station, "validDriverToken1234567")
		slow <- answer{status: st, err: err}
	}()
	testwait.Until(t, 5*time.Second, "the slow call at the service", func() bool { return calls.Load() == 1 })

	start := time.Now()
	_, _, err := c.Authorize(start.Add(100*time.Millisecond), station, "blockedDriverToken12345")
	took := time.Since(start)
	mustNoAnswer(t, err, "deadline passed while waiting for a batch")
	if took < 90*time.Millisecond || took > 3*time.Second { // not the slow call's 10s
		t.Errorf("the waiting call returned after %v; want about its 100ms deadline", took)
	}
	close(release)
	if a := <-slow; a.err != nil || a.status != session.StatusAllowed {
		t.Errorf("slow call: %q, %v", a.status, a.err)
	}
	// The next call goes at once; the abandoned one was never sent.
	if _, _, err := c.Authorize(time.Now().Add(time.Second), station, "validDriverToken1234567"); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("the service got %d calls; want 2 (the abandoned one never sent)", got)
	}
}

// A batch runs until the earliest deadline in it: an answer that comes
// after a caller's deadline is no answer for that caller, and still the
// answer for a caller whose deadline is later.
func TestBatchDeadlinePerCaller(t *testing.T) {
	srv := NewServer(Config{now: func() time.Time { return testNow }})
	gate := make(chan struct{})
	var first atomic.Bool
	var batches atomic.Int64
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		if first.CompareAndSwap(false, true) {
			<-gate
		} else if items(ctx) > 1 {
			batches.Add(1)
			time.Sleep(700 * time.Millisecond) // on purpose: past the early caller's deadline
		}
		srv.Handler(ctx)
	})
	c := mustBatchClient(t, ClientConfig{URL: url, Grace: 2 * time.Second})
	done := make(chan answer, 1)
	go func() {
		_, _, err := c.Authorize(time.Now().Add(5*time.Second), station, "validDriverToken1234567")
		done <- answer{err: err}
	}()
	testwait.Until(t, 5*time.Second, "the first call at the service", first.Load)

	var early, late answer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		start := time.Now()
		st, r, err := c.Authorize(start.Add(5*time.Second), station, "blockedDriverToken12345")
		late = answer{st, r, err, time.Since(start)}
	}()
	testwait.Until(t, 5*time.Second, "the late caller queued", func() bool { return queued(c) == 1 })
	go func() {
		defer wg.Done()
		start := time.Now()
		st, r, err := c.Authorize(start.Add(400*time.Millisecond), station, "validDriverToken1234567")
		early = answer{st, r, err, time.Since(start)}
	}()
	testwait.Until(t, 5*time.Second, "the early caller queued", func() bool { return queued(c) == 2 })
	close(gate)
	wg.Wait()
	if a := <-done; a.err != nil {
		t.Errorf("first call: %v", a.err)
	}
	if batches.Load() != 1 {
		t.Fatalf("%d batches; want the two callers in one", batches.Load())
	}
	mustNoAnswer(t, early.err, "answered after the deadline")
	if late.err != nil || late.status != session.StatusNotAllowed || late.reason != "blocked" {
		t.Errorf("late caller: %q, %q, %v; want not_allowed, blocked", late.status, late.reason, late.err)
	}
}

// A batch whose service is too slow for all of its callers is cut off at
// its earliest deadline plus the grace, not at the latest.
func TestBatchCutOffAtEarliestDeadline(t *testing.T) {
	gate := make(chan struct{})
	var first atomic.Bool
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		if first.CompareAndSwap(false, true) {
			<-gate
		} else {
			time.Sleep(2 * time.Second) // on purpose: a hung batch
		}
		ctx.SetBodyString(`[{"status":"allowed"},{"status":"allowed"}]`)
	})
	c := mustBatchClient(t, ClientConfig{URL: url, Grace: 10 * time.Millisecond})
	go func() { _, _, _ = c.Authorize(time.Now().Add(5*time.Second), station, "validDriverToken1234567") }()
	testwait.Until(t, 5*time.Second, "the first call at the service", first.Load)
	res := make(chan answer, 2)
	start := time.Now()
	for _, d := range []time.Duration{150 * time.Millisecond, 3 * time.Second} {
		go func() {
			st, r, err := c.Authorize(start.Add(d), station, "validDriverToken1234567")
			res <- answer{st, r, err, time.Since(start)}
		}()
		want := 1
		if d > time.Second {
			want = 2
		}
		testwait.Until(t, 5*time.Second, "queued", func() bool { return queued(c) == want })
	}
	close(gate) // the queued two go together in one batch
	for range 2 {
		a := <-res
		mustNoAnswer(t, a.err, "timeout")
		if a.took > 1500*time.Millisecond { // the batch hangs 2s
			t.Errorf("a caller of the hung batch returned after %v; want about 150ms + 10ms grace", a.took)
		}
	}
}

// Without batching, a service that has no batch endpoint keeps working
// with the one-call contract under concurrent calls.
func TestNoBatchOneCallContract(t *testing.T) {
	var paths sync.Map
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		paths.Store(string(ctx.Path()), true)
		if string(ctx.Path()) != "/authorize" {
			ctx.SetStatusCode(404)
			return
		}
		time.Sleep(5 * time.Millisecond) // on purpose: calls overlap
		ctx.SetBodyString(`{"status":"allowed"}`)
	})
	c := mustClient(t, url)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 30 {
		wg.Go(func() {
			if _, _, err := c.Authorize(time.Now().Add(5*time.Second), station, "validDriverToken1234567"); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	paths.Range(func(k, _ any) bool {
		if k != "/authorize" {
			t.Errorf("the client called %s", k)
		}
		return true
	})
}

// With batching, the service still never works on more calls than there are
// callers (the pool's --authz-concurrency workers), even when every batch
// takes longer than its deadline, and has at most BatchConns requests at
// once.
func TestBatchConcurrencyBound(t *testing.T) {
	const workers = 4
	var inItems, peakItems, inReqs, peakReqs, total atomic.Int64
	peak := func(p *atomic.Int64, n int64) {
		for cur := p.Load(); n > cur && !p.CompareAndSwap(cur, n); cur = p.Load() {
		}
	}
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		n := int64(items(ctx))
		total.Add(n)
		peak(&peakItems, inItems.Add(n))
		peak(&peakReqs, inReqs.Add(1))
		defer inItems.Add(-n)
		defer inReqs.Add(-1)
		time.Sleep(150 * time.Millisecond) // on purpose: longer than the deadline
		if n == 1 {
			ctx.SetBodyString(`{"status":"allowed"}`)
			return
		}
		ctx.SetBodyString("[" + strings.TrimSuffix(strings.Repeat(`{"status":"allowed"},`, int(n)), ",") + "]")
	})
	c := mustBatchClient(t, ClientConfig{URL: url, Grace: time.Second})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range 6 {
				_, _, _ = c.Authorize(time.Now().Add(60*time.Millisecond), station, "validDriverToken1234567")
			}
		})
	}
	wg.Wait()
	testwait.Until(t, 5*time.Second, "the service idle", func() bool { return inItems.Load() == 0 })
	if total.Load() < workers {
		t.Fatalf("%d calls reached the service: the bound was not exercised", total.Load())
	}
	if p := peakItems.Load(); p > workers {
		t.Errorf("the service worked on %d calls at once; there are %d callers", p, workers)
	}
	if p := peakReqs.Load(); p > 1 {
		t.Errorf("%d requests at once; BatchConns is 1", p)
	}
}

func TestBatchConfigValidate(t *testing.T) {
	for _, cfg := range []ClientConfig{
		{URL: "http://host", Batch: true, MaxBatch: maxBatchItems + 1},
		{URL: "http://host", Batch: true, MaxBatch: -1},
		{URL: "http://host", Batch: true, BatchConns: -1},
	} {
		if _, err := NewClient(cfg); err == nil || !strings.HasPrefix(err.Error(), "authz: ") {
			t.Errorf("NewClient(%+v): %v; want an error", cfg, err)
		}
	}
	c := mustBatchClient(t, ClientConfig{URL: "http://host"})
	if c.batch.maxItems != 128 || c.batch.maxInflight != 1 {
		t.Errorf("defaults: MaxBatch %d, BatchConns %d; want 128, 1", c.batch.maxItems, c.batch.maxInflight)
	}
	if c.batchEndpoint != "http://host/authorize/batch" {
		t.Errorf("batch endpoint %q", c.batchEndpoint)
	}
	if mustClient(t, "http://host").batch != nil {
		t.Error("batching on without ClientConfig.Batch")
	}
}

// BenchmarkAuthorize: 64 concurrent callers against the real server on
// loopback, one call per round trip (batch=off) or coalesced (batch=on).
// ns/op is the wall time per call with both sides in this process.
func BenchmarkAuthorize(b *testing.B) {
	for _, batch := range []bool{false, true} {
		b.Run(fmt.Sprintf("batch=%v", batch), func(b *testing.B) {
			ln := listen(b)
			s := NewServer(Config{Logger: slog.New(slog.DiscardHandler)})
			go func() { _ = s.Serve(ln) }()
			defer func() { _ = s.Shutdown() }()
			c, err := NewClient(ClientConfig{URL: "http://" + ln.Addr().String(), Batch: batch})
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(32) // 64 callers on 2 cores, as the pool's default
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := c.Authorize(time.Now().Add(5*time.Second), station, "validDriverToken1234567"); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
