package main

import (
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are clamped to [minLatency, maxLatency] before they are
// recorded: hdrhistogram refuses a value above its highest trackable value,
// and a negative end-to-end latency (the callback read before the 202, which
// can happen on loopback) is a real sample, not an error.
const (
	minLatency = time.Microsecond
	maxLatency = 60 * time.Second
	sigFigs    = 3
)

// histogram is an HdrHistogram of latencies in nanoseconds. It is safe for
// concurrent use: one mutex is cheaper than a histogram per worker (each is
// a few hundred KiB, which would show in the heap figures).
type histogram struct {
	mu struct {
		sync.Mutex
		h *hdrhistogram.Histogram
	}
}

func newHistogram() *histogram {
	h := &histogram{}
	h.mu.h = hdrhistogram.New(minLatency.Nanoseconds(), maxLatency.Nanoseconds(), sigFigs)
	return h
}

// Record adds one latency, clamped.
func (h *histogram) Record(d time.Duration) {
	d = min(max(d, minLatency), maxLatency)
	h.mu.Lock()
	_ = h.mu.h.RecordValue(d.Nanoseconds()) // in range: cannot fail
	h.mu.Unlock()
}

// Latency summarises a histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns the histogram's count and quantiles.
func (h *histogram) Summary() Latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	hh := h.mu.h
	if hh.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: hh.TotalCount(),
		Mean:  ms(int64(hh.Mean())),
		P50:   ms(hh.ValueAtQuantile(50)),
		P90:   ms(hh.ValueAtQuantile(90)),
		P99:   ms(hh.ValueAtQuantile(99)),
		P999:  ms(hh.ValueAtQuantile(99.9)),
		Max:   ms(hh.Max()),
	}
}

// ms converts nanoseconds to milliseconds rounded to the microsecond.
func ms(ns int64) float64 {
	return math.Round(float64(ns)/1e3) / 1e3
}
