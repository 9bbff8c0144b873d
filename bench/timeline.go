package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The timeline: what a workload saw in each wall-clock second since its
// load started. The 202s (and their ack latencies) go to the second in which
// each 202 was read; the callbacks (and the end-to-end latencies) to the
// second in which each callback was received, so the drain after the load
// shows too.
//
// The load generator's hot path records into it without a lock: finding the
// second is two atomic loads (its slots are allocated on first use, with a
// compare-and-swap), and a latency is an atomic add to a bucket of a small
// log-linear histogram (its count is their sum), a compare-and-swap only
// when it is a new maximum.
// An HdrHistogram per second would need a mutex (the shared one that every
// 202 already takes in histogram.go is the only one on that path) and, at 3
// significant figures, ~150 KiB.

const (
	// tlSubBits sets the precision of the per-second histograms: values of
	// at least 2*tlSub µs fall in buckets 1/tlSub wide (relative to their
	// low edge), so a quantile is at most ~3% high; below, buckets are 1µs.
	tlSubBits = 5
	tlSub     = 1 << tlSubBits
	// tlMaxLatency clamps the per-second histograms. It is higher than
	// histogram.go's maxLatency because the burst workload's end-to-end
	// latencies can exceed a minute.
	tlMaxLatency = time.Hour
	// tlBuckets covers tlIndex(tlMaxLatency in µs) (checked by a test).
	tlBuckets = 28 * tlSub
	// The seconds are kept in tlChunks chunks of tlChunk, allocated as
	// needed: 16384 seconds (4.5 hours). Later events count in the last.
	tlChunk      = 256
	tlChunks     = 64
	tlMaxSeconds = tlChunk * tlChunks
)

// timeline holds the per-second counts and latencies of one workload. It
// is safe for concurrent use. Its zero value is not usable: call
// newTimeline.
type timeline struct {
	start  time.Time // the load's start: second 0 begins here
	chunks [tlChunks]atomic.Pointer[[tlChunk]atomic.Pointer[tlSecond]]
}

// tlSecond is one second: the 202s read in it, the callbacks received in
// it, and their latencies (allocated on first use).
type tlSecond struct {
	ack, e2e  atomic.Pointer[tlHist]
	callbacks atomic.Int64
}

func newTimeline(start time.Time) *timeline { return &timeline{start: start} }

// second returns the second at falls in, allocating it if need be.
func (t *timeline) second(at time.Time) *tlSecond {
	i := min(max(int(at.Sub(t.start)/time.Second), 0), tlMaxSeconds-1)
	return loadOrNew(&loadOrNew(&t.chunks[i/tlChunk])[i%tlChunk])
}

// lookup returns second i, or nil if nothing happened in it.
func (t *timeline) lookup(i int) *tlSecond {
	c := t.chunks[i/tlChunk].Load()
	if c == nil {
		return nil
	}
	return c[i%tlChunk].Load()
}

// loadOrNew returns *p, first setting it to a new T if it is nil.
func loadOrNew[T any](p *atomic.Pointer[T]) *T {
	if v := p.Load(); v != nil {
		return v
	}
	if v := new(T); p.CompareAndSwap(nil, v) {
		return v
	}
	return p.Load()
}

// ack records a 202 read at at, lat after the request was sent (or due).
func (t *timeline) ack(at time.Time, lat time.Duration) {
	loadOrNew(&t.second(at).ack).record(lat)
}

// callback records a callback received at at.
func (t *timeline) callback(at time.Time) { t.second(at).callbacks.Add(1) }

// e2e records an end-to-end latency d (202 read -> callback received) in the
// second of at, the callback's arrival.
func (t *timeline) e2e(at time.Time, d time.Duration) {
	loadOrNew(&t.second(at).e2e).record(d)
}

// TimelinePoint is one second of a workload. T is the second's end in
// seconds since the load started: T=1 holds what happened in [0s, 1s). The
// latencies are 0 when their count is.
type TimelinePoint struct {
	T int `json:"t"`
	// Acked counts the 202s read in the second; the ack latencies are
	// theirs (request sent, or due in the open loop -> 202 read).
	Acked  int64   `json:"acked"`
	AckP50 float64 `json:"ack_p50_ms"`
	AckP99 float64 `json:"ack_p99_ms"`
	AckMax float64 `json:"ack_max_ms"`
	// Callbacks is nil for a workload without callbacks (the ceiling).
	*CallbackPoint
}

// CallbackPoint is the callback side of one second.
type CallbackPoint struct {
	// Callbacks counts the callback POSTs received in the second,
	// duplicates included; E2ECount the end-to-end latencies (202 read ->
	// first callback for its id) that ended in it.
	Callbacks int64   `json:"callbacks"`
	E2ECount  int64   `json:"e2e_count"`
	E2EP50    float64 `json:"e2e_p50_ms"`
	E2EP99    float64 `json:"e2e_p99_ms"`
	E2EMax    float64 `json:"e2e_max_ms"`
}

// points returns one point per second, from the first to the last second
// in which anything happened (empty seconds in between included), with the
// callback side if callbacks is set. Call it once the workload is over.
func (t *timeline) points(callbacks bool) []TimelinePoint {
	last := -1
	for c := tlChunks - 1; c >= 0 && last < 0; c-- {
		chunk := t.chunks[c].Load()
		if chunk == nil {
			continue
		}
		for j := tlChunk - 1; j >= 0; j-- {
			if chunk[j].Load() != nil {
				last = c*tlChunk + j
				break
			}
		}
	}
	pts := make([]TimelinePoint, 0, last+1)
	for i := 0; i <= last; i++ {
		p := TimelinePoint{T: i + 1}
		var cb CallbackPoint
		if s := t.lookup(i); s != nil {
			if h := s.ack.Load(); h != nil {
				p.Acked, p.AckP50, p.AckP99, p.AckMax = h.summary()
			}
			if h := s.e2e.Load(); h != nil {
				cb.E2ECount, cb.E2EP50, cb.E2EP99, cb.E2EMax = h.summary()
			}
			cb.Callbacks = s.callbacks.Load()
		}
		if callbacks {
			p.CallbackPoint = &cb
		}
		pts = append(pts, p)
	}
	return pts
}

// tlHist is a log-linear histogram of latencies in µs, clamped to
// [minLatency, tlMaxLatency], with atomic counters: ~3.6 KiB.
type tlHist struct {
	max    atomic.Int64 // µs
	counts [tlBuckets]atomic.Uint32
}

func (h *tlHist) record(d time.Duration) {
	us := int64(min(max(d, minLatency), tlMaxLatency) / time.Microsecond)
	h.counts[tlIndex(uint64(us))].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// tlIndex is the bucket of us: us itself below 2*tlSub, then tlSub buckets
// per power of two.
func tlIndex(us uint64) int {
	if us < 2*tlSub {
		return int(us)
	}
	e := bits.Len64(us) - tlSubBits - 1
	return e*tlSub + int(us>>e)
}

// tlHigh is the highest value (µs) in bucket i.
func tlHigh(i int) int64 {
	if i < 2*tlSub {
		return int64(i)
	}
	e := i/tlSub - 1
	m := int64(i%tlSub + tlSub)
	return (m+1)<<e - 1
}

// summary returns the count, p50, p99 and max in ms. A quantile is the
// highest value of its bucket, capped at the maximum (as HdrHistogram
// reports its highest equivalent value).
func (h *tlHist) summary() (n int64, p50, p99, maxMs float64) {
	for i := range h.counts {
		n += int64(h.counts[i].Load())
	}
	if n == 0 {
		return 0, 0, 0, 0
	}
	top := h.max.Load()
	q := func(f float64) float64 {
		rank := max(int64(math.Ceil(f*float64(n))), 1)
		var cum int64
		for i := range h.counts {
			if cum += int64(h.counts[i].Load()); cum >= rank {
				return float64(min(tlHigh(i), top)) / 1e3
			}
		}
		return float64(top) / 1e3
	}
	return n, q(0.50), q(0.99), float64(top) / 1e3
}
