package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/valyala/fasthttp"
)

// TestBenchSmoke runs both workloads with a tiny load, in process: a
// functional check of the harness and of chargeauth's accept -> callback
// path. It asserts on counts only, never on speed. Run it under pprof with
// go test -run TestBenchSmoke -cpuprofile cpu.out ./bench.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole service; skipped with -short")
	}
	dir := t.TempDir()
	o := options{
		load:         LoadConfig{Concurrency: 4, Duration: time.Second, Requests: 200, Timeout: 5 * time.Second},
		out:          filepath.Join(dir, "out", "report.json"),
		tempDir:      dir,
		drainTimeout: 20 * time.Second,
	}
	var table bytes.Buffer
	if err := run(o, &table); err != nil {
		t.Fatalf("run: %v\n%s", err, table.String())
	}
	t.Logf("\n%s", table.String())

	b, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("report does not parse: %v", err)
	}
	if s.Ceiling == nil || s.Durable == nil || s.Chargeauth == nil {
		t.Fatalf("report lacks a workload: %s", b)
	}
	if s.Ratios.Throughput <= 0 || s.Ratios.DurableThroughput <= 0 {
		t.Errorf("ratios %+v: want both throughput ratios", s.Ratios)
	}
	for _, r := range []*Report{s.Ceiling, s.Durable, s.Chargeauth} {
		if r.Accepted == 0 {
			t.Errorf("%s: no 202 (errors %v, examples %v)", r.Workload, r.Errors, r.ErrorExamples)
		}
		if r.Sent > o.load.Requests {
			t.Errorf("%s: sent %d requests, budget %d", r.Workload, r.Sent, o.load.Requests)
		}
		if r.Ack.Count != r.Accepted {
			t.Errorf("%s: %d ack latencies for %d 202s", r.Workload, r.Ack.Count, r.Accepted)
		}
	}
	cb := s.Chargeauth.Callbacks
	if cb == nil {
		t.Fatal("chargeauth report has no callbacks")
	}
	if cb.Lost != 0 {
		t.Errorf("lost %d callbacks", cb.Lost)
	}
	if cb.Distinct != s.Chargeauth.Accepted {
		t.Errorf("callbacks for %d distinct ids, %d 202s", cb.Distinct, s.Chargeauth.Accepted)
	}
	if cb.Received < s.Chargeauth.Accepted {
		t.Errorf("received %d callbacks, %d 202s", cb.Received, s.Chargeauth.Accepted)
	}
	if cb.Statuses["allowed"] != cb.Received {
		t.Errorf("decisions %v: want every callback allowed", cb.Statuses)
	}
	if cb.E2E.Count != cb.Distinct {
		t.Errorf("%d e2e latencies for %d ids", cb.E2E.Count, cb.Distinct)
	}
	if s.Chargeauth.Memory == nil || s.Chargeauth.Memory.PeakHeapBytes == 0 {
		t.Errorf("no memory figures: %+v", s.Chargeauth.Memory)
	}
	mustHaveTimeline(t, "ceiling", s.Ceiling.Timeline, s.Ceiling.Accepted, 0)
	mustHaveTimeline(t, "durable", s.Durable.Timeline, s.Durable.Accepted, 0)
	mustHaveTimeline(t, "chargeauth", s.Chargeauth.Timeline, s.Chargeauth.Accepted, cb.Received)
	if s.Ceiling.Timeline[0].CallbackPoint != nil || s.Chargeauth.Timeline[0].CallbackPoint == nil {
		t.Errorf("callbacks in the timeline: ceiling %v, chargeauth %v",
			s.Ceiling.Timeline[0].CallbackPoint != nil, s.Chargeauth.Timeline[0].CallbackPoint != nil)
	}
	mustBePNG(t, chartPath(o.out))
}

func TestParseID(t *testing.T) {
	id, ok := parseID([]byte("0190a6f2-7c3b-7def-8a12-3456789ABCDE"))
	want := reqID{0x01, 0x90, 0xa6, 0xf2, 0x7c, 0x3b, 0x7d, 0xef, 0x8a, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde}
	if !ok || id != want {
		t.Fatalf("parseID = %x, %v", id, ok)
	}
	for _, bad := range []string{"", "0190a6f2-7c3b-7def-8a12-3456789abcd", "0190a6f2x7c3b-7def-8a12-3456789abcde", "0190a6f2-7c3b-7def-8a12-3456789abcdg"} {
		if _, ok := parseID([]byte(bad)); ok {
			t.Errorf("parseID(%q) ok", bad)
		}
	}
}

func TestHistogramClamps(t *testing.T) {
	h := newHistogram()
	h.Record(-time.Second)
	h.Record(time.Hour)
	s := h.Summary()
	if s.Count != 2 || s.P50 < 0.001 || s.Max < 59_000 || s.Max > 61_000 {
		t.Fatalf("summary %+v", s)
	}
}

// TestOpenLoop checks that the open loop stops at its budget and its time.
func TestOpenLoop(t *testing.T) {
	r, err := CeilingConfig{Load: LoadConfig{Concurrency: 2, Duration: 500 * time.Millisecond, Requests: 50, Rate: 200, Timeout: time.Second}}.Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 50 || r.Accepted != 50 || r.ErrorTotal != 0 {
		t.Fatalf("sent %d, 202s %d, errors %v; want 50, 50, none", r.Sent, r.Accepted, r.Errors)
	}
	if r.ElapsedSeconds < 0.2 {
		t.Errorf("50 requests at 200/s took %.3fs: the rate was not kept", r.ElapsedSeconds)
	}
}

// TestBurstSmoke runs the burst workload with N=2000: a functional check of
// the fake authorization service, the sink's bookkeeping and the drain. It
// asserts on counts only, never on speed.
func TestBurstSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole service; skipped with -short")
	}
	dir := t.TempDir()
	o := options{
		load:            LoadConfig{Concurrency: 64, Timeout: 10 * time.Second},
		out:             filepath.Join(dir, "out", "burst.json"),
		tempDir:         dir,
		drainTimeout:    60 * time.Second,
		burst:           2000,
		decisionTimeout: defaultBurstDecisionTimeout,
		fakeProbe:       300 * time.Millisecond,
	}
	var table bytes.Buffer
	if err := runBurst(o, &table); err != nil {
		t.Fatalf("run: %v\n%s", err, table.String())
	}
	t.Logf("\n%s", table.String())
	b, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	var got BurstReport
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("report does not parse: %v", err)
	}

	c := got.Callbacks
	if got.Sent != o.burst || got.Accepted == 0 {
		t.Errorf("sent %d, 202s %d; want %d sent (errors %v, examples %v)", got.Sent, got.Accepted, o.burst, got.Errors, got.ErrorExamples)
	}
	if got.Drain.TimedOut {
		t.Errorf("drain timed out after %.1fs", got.Drain.WaitedS)
	}
	if c.Lost != 0 {
		t.Errorf("lost %d callbacks", c.Lost)
	}
	if c.Matched != got.Accepted || c.Received < got.Accepted {
		t.Errorf("callbacks: %d matched, %d received, for %d 202s", c.Matched, c.Received, got.Accepted)
	}
	if c.WrongWebhookID+c.BadCallbacks+c.BadAcks != 0 {
		t.Errorf("callbacks: wrong webhook-id %d, bad %d, bad 202s %d", c.WrongWebhookID, c.BadCallbacks, c.BadAcks)
	}
	if c.Statuses["allowed"] != c.Received {
		t.Errorf("decisions %v: want every callback allowed", c.Statuses)
	}
	if got.Fake.Answers == 0 || got.Fake.AnswersPerSec <= 0 {
		t.Errorf("fake capacity not measured: %+v", got.Fake)
	}
	if got.Ack.Count != got.Accepted {
		t.Errorf("%d ack latencies for %d 202s", got.Ack.Count, got.Accepted)
	}
	if got.Memory.PeakHeapAllocBytes == 0 || got.Memory.PeakRSSBytes == 0 || len(got.Series) == 0 {
		t.Errorf("no memory figures or series: %+v, %d samples", got.Memory, len(got.Series))
	}
	mustHaveTimeline(t, "burst", got.Timeline, got.Accepted, c.Received)
	mustBePNG(t, chartPath(o.out))
	if got.Memory.BenchBookkeepingBytes != uint64(o.burst)*16 {
		t.Errorf("bookkeeping %d bytes, want 16 per request", got.Memory.BenchBookkeepingBytes)
	}
}

func TestSeqRoundTrip(t *testing.T) {
	for _, seq := range []int64{0, 7, 1999, 999_999_999} {
		tok := appendSeq([]byte(burstTokenPrefix), seq)
		if n := len(tok); n < 20 || n > 80 {
			t.Fatalf("token %q: %d characters, chargeauth takes 20 to 80", tok, n)
		}
		got, ok := parseSeq(tok)
		if !ok || got != seq {
			t.Errorf("parseSeq(%q) = %d, %v; want %d", tok, got, ok, seq)
		}
	}
	for _, bad := range []string{"", burstTokenPrefix + "12345", "other" + "DriverToken0000000001", burstTokenPrefix + "00000000x1"} {
		if _, ok := parseSeq([]byte(bad)); ok {
			t.Errorf("parseSeq(%q) ok", bad)
		}
	}
}

// The durable ceiling's handler stores each valid body under its id before
// its 202, and stores nothing for a body it refuses.
func TestDurableCeilingStores(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ids atomic.Uint64
	post := func(body []byte) *fasthttp.RequestCtx {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(fasthttp.MethodPost)
		ctx.Request.SetBody(body)
		ceilingHandle(&ctx, &ids, db)
		return &ctx
	}
	body := requestBody("http://127.0.0.1:9/callback")
	if ctx := post(body); ctx.Response.StatusCode() != fasthttp.StatusAccepted {
		t.Fatalf("valid body: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if ctx := post([]byte(`{}`)); ctx.Response.StatusCode() != fasthttp.StatusBadRequest {
		t.Fatalf("invalid body: %d", ctx.Response.StatusCode())
	}
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], 1)
	got, closer, err := db.Get(key[:])
	if err != nil {
		t.Fatalf("the accepted body is not stored: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Errorf("stored %q, want %q", got, body)
	}
	closer.Close()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	it.Close()
	if n != 1 {
		t.Errorf("%d records stored, want 1 (the refused body is not stored)", n)
	}
}
