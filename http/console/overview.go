package console

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
)

// sample is one reading of the metrics registry: counters as they are
// (cumulative since start), gauges as read.
type sample struct {
	At        time.Time
	Requests  map[string]float64 // chargeauth_requests_total by outcome
	Decisions map[string]float64 // chargeauth_decisions_total by status
	Callbacks map[string]float64 // chargeauth_callback_attempts_total by result
	AuthzCall histogram          // chargeauth_authz_call_seconds
	Records   map[string]float64 // chargeauth_records by state

	Backlog, Pending, Live, InFlight float64
	OldestAge                        float64 // seconds
	Breaker                          float64 // 0 closed, 1 half-open, 2 open
	Ready                            float64
	StoreBytes                       float64
	ACL                              aclInfo
	HasACL                           bool
	Version                          string
	Started                          float64 // process_start_time_seconds
}

type aclInfo struct {
	Version  string  `json:"version"`
	Entries  float64 `json:"entries"`
	LoadedAt float64 `json:"loaded_at_unix"`
	Failures float64 `json:"reload_failures"`
}

// histogram is a cumulative Prometheus histogram.
type histogram struct {
	Count  float64
	Sum    float64
	Bounds []float64 // upper bounds, ascending, without +Inf
	Counts []float64 // cumulative count per bound
}

// sampler keeps the last samples in a ring.
type sampler struct {
	g   prometheus.Gatherer
	now func() time.Time

	mu   sync.Mutex
	ring []sample // oldest first, at most cap entries
	size int
}

func newSampler(g prometheus.Gatherer, size int, now func() time.Time) *sampler {
	return &sampler{g: g, now: now, size: size}
}

// take reads the registry and keeps the reading.
func (s *sampler) take() {
	sm := s.read()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == s.size {
		copy(s.ring, s.ring[1:])
		s.ring = s.ring[:len(s.ring)-1]
	}
	s.ring = append(s.ring, sm)
}

func (s *sampler) samples() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.ring...)
}

// aclNow reads the ACL's status from the registry now.
func (s *sampler) aclNow() (aclInfo, bool) {
	sm := s.read()
	return sm.ACL, sm.HasACL
}

func (s *sampler) read() sample {
	sm := sample{
		At:        s.now(),
		Requests:  map[string]float64{},
		Decisions: map[string]float64{},
		Callbacks: map[string]float64{},
		Records:   map[string]float64{},
	}
	// Gather returns what it could collect along with an error for the
	// rest (the store's collector skips Pebble's metrics while closing):
	// use what there is.
	mfs, _ := s.g.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := value(m)
			switch mf.GetName() {
			case "chargeauth_requests_total":
				sm.Requests[label(m, "outcome")] += v
			case "chargeauth_decisions_total":
				sm.Decisions[label(m, "status")] += v
			case "chargeauth_callback_attempts_total":
				sm.Callbacks[label(m, "result")] += v
			case "chargeauth_records":
				sm.Records[label(m, "state")] = v
			case "chargeauth_backlog":
				sm.Backlog = v
			case "chargeauth_callbacks_pending":
				sm.Pending = v
			case "chargeauth_live_requests":
				sm.Live = v
			case "chargeauth_authz_calls_in_flight":
				sm.InFlight = v
			case "chargeauth_callback_oldest_undelivered_age_seconds":
				sm.OldestAge = v
			case "chargeauth_authz_breaker_state":
				sm.Breaker = v
			case "chargeauth_ready":
				sm.Ready = v
			case "chargeauth_pebble_disk_usage_bytes":
				sm.StoreBytes = v
			case "process_start_time_seconds":
				sm.Started = v
			case "chargeauth_build_info":
				sm.Version = label(m, "version")
			case "chargeauth_acl_info":
				sm.ACL.Version, sm.HasACL = label(m, "version"), true
			case "chargeauth_acl_entries":
				sm.ACL.Entries = v
			case "chargeauth_acl_last_reload_success_timestamp_seconds":
				sm.ACL.LoadedAt = v
			case "chargeauth_acl_reload_failures_total":
				sm.ACL.Failures = v
			case "chargeauth_authz_call_seconds":
				if h := m.GetHistogram(); h != nil {
					sm.AuthzCall.Count = float64(h.GetSampleCount())
					sm.AuthzCall.Sum = h.GetSampleSum()
					for _, b := range h.GetBucket() {
						if !math.IsInf(b.GetUpperBound(), 1) {
							sm.AuthzCall.Bounds = append(sm.AuthzCall.Bounds, b.GetUpperBound())
							sm.AuthzCall.Counts = append(sm.AuthzCall.Counts, float64(b.GetCumulativeCount()))
						}
					}
				}
			}
		}
	}
	return sm
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// rate is the per-second increase of a counter between two readings.
func rate(a, b float64, dt time.Duration) float64 {
	if dt <= 0 || b < a {
		return 0
	}
	return (b - a) / dt.Seconds()
}

// quantile estimates the q-quantile of the observations between two
// readings of a histogram (as PromQL's histogram_quantile does: linear
// within the bucket). It returns NaN when there were none.
func quantile(q float64, a, b histogram) float64 {
	total := b.Count - a.Count
	if total <= 0 || len(b.Bounds) == 0 {
		return math.NaN()
	}
	delta := func(i int) float64 {
		d := b.Counts[i]
		if i < len(a.Counts) {
			d -= a.Counts[i]
		}
		return d
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for i, ub := range b.Bounds {
		c := delta(i)
		if c >= rank {
			if c == prevCount {
				return ub
			}
			return prevBound + (ub-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = ub, c
	}
	return b.Bounds[len(b.Bounds)-1] // in the +Inf bucket: at least the last bound
}

// window is how far back the overview's current rates look.
const window = 10 * time.Second

// overviewBody is what GET /console/api/overview answers.
type overviewBody struct {
	At        time.Time          `json:"at"`
	Who       string             `json:"who"`
	Version   string             `json:"version"`
	StartedAt *time.Time         `json:"started_at,omitempty"`
	Ready     bool               `json:"ready"`
	Health    string             `json:"health"` // "ok" or why not
	Window    float64            `json:"window_seconds"`
	Accepted  float64            `json:"accepted_total"`
	Refused   float64            `json:"refused_total"`
	Rates     rates              `json:"rates"`
	Decisions map[string]float64 `json:"decisions_total"`
	Callbacks map[string]float64 `json:"callback_attempts_total"`
	Records   map[string]float64 `json:"records"`
	Backlog   float64            `json:"backlog"`
	Pending   float64            `json:"callbacks_pending"`
	Live      float64            `json:"live_requests"`
	OldestAge float64            `json:"oldest_undelivered_seconds"`
	Authz     authzBody          `json:"authz"`
	Store     storeBody          `json:"store"`
	ACL       *aclBody           `json:"acl"`
	Series    series             `json:"series"`
	Actions   []action           `json:"actions"`
}

type rates struct {
	Accepted  float64            `json:"accepted_per_s"`
	Decisions map[string]float64 `json:"decisions_per_s"`
	Callbacks map[string]float64 `json:"callbacks_per_s"`
}

type authzBody struct {
	P50MS    *float64 `json:"p50_ms"` // null: no call in the window
	P99MS    *float64 `json:"p99_ms"`
	Calls    float64  `json:"calls_per_s"`
	InFlight float64  `json:"in_flight"`
	Breaker  string   `json:"breaker"`
}

type storeBody struct {
	State      string  `json:"state"`
	UsedBytes  float64 `json:"used_bytes"`
	FreeBytes  *uint64 `json:"free_bytes"`
	TotalBytes *uint64 `json:"total_bytes"`
}

type aclBody struct {
	aclInfo
	Reloadable bool `json:"reloadable"`
}

// series are the sparklines: one point per sample interval, oldest first.
type series struct {
	At        []int64    `json:"at"` // unix seconds
	Accepted  []float64  `json:"accepted_per_s"`
	Decisions []float64  `json:"decisions_per_s"`
	Delivered []float64  `json:"delivered_per_s"`
	Retried   []float64  `json:"retried_per_s"`
	Failed    []float64  `json:"failed_per_s"`
	Backlog   []float64  `json:"backlog"`
	OldestAge []float64  `json:"oldest_undelivered_seconds"`
	AuthzP99  []*float64 `json:"authz_p99_ms"`
}

var breakerNames = map[float64]string{0: "closed", 1: "half-open", 2: "open"}

func ms(sec float64) *float64 {
	if math.IsNaN(sec) {
		return nil
	}
	v := math.Round(sec*1e6) / 1e3
	return &v
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

func (c *Console) overview(ctx *fasthttp.RequestCtx, who string) {
	ring := c.sampler.samples()
	cur := c.sampler.read() // current values are read now, not from the ring
	// The rates look back about one window: at the newest sample at least
	// that old, else the oldest there is.
	base := cur
	for i := len(ring) - 1; i >= 0; i-- {
		base = ring[i]
		if cur.At.Sub(ring[i].At) >= window {
			break
		}
	}
	dt := cur.At.Sub(base.At)
	if dt < time.Second {
		dt = 0 // too short to say anything: no rates yet
	}
	b := overviewBody{
		At: cur.At.UTC(), Who: who, Version: cur.Version, Ready: cur.Ready == 1, Health: "ok",
		Window: math.Round(dt.Seconds()*10) / 10, Accepted: cur.Requests["accepted"],
		Decisions: cur.Decisions, Callbacks: cur.Callbacks, Records: cur.Records,
		Backlog: cur.Backlog, Pending: cur.Pending, Live: cur.Live, OldestAge: cur.OldestAge,
		Rates: rates{
			Accepted:  rate(base.Requests["accepted"], cur.Requests["accepted"], dt),
			Decisions: map[string]float64{}, Callbacks: map[string]float64{},
		},
		Authz: authzBody{
			P50MS: ms(quantile(0.5, base.AuthzCall, cur.AuthzCall)), P99MS: ms(quantile(0.99, base.AuthzCall, cur.AuthzCall)),
			Calls: rate(base.AuthzCall.Count, cur.AuthzCall.Count, dt), InFlight: cur.InFlight, Breaker: breakerNames[cur.Breaker],
		},
		Store:   storeBody{State: "writable", UsedBytes: cur.StoreBytes},
		Actions: c.actions.recent(),
	}
	b.Refused = sum(cur.Requests) - b.Accepted
	if cur.Started > 0 {
		st := time.Unix(0, int64(cur.Started*1e9)).UTC()
		b.StartedAt = &st
	}
	for k, v := range cur.Decisions {
		b.Rates.Decisions[k] = rate(base.Decisions[k], v, dt)
	}
	for k, v := range cur.Callbacks {
		b.Rates.Callbacks[k] = rate(base.Callbacks[k], v, dt)
	}
	if err := c.cfg.Health(); err != nil {
		b.Health = err.Error()
		b.Store.State = err.Error()
	}
	if c.cfg.Disk != nil {
		if free, total, err := c.cfg.Disk(); err == nil {
			b.Store.FreeBytes, b.Store.TotalBytes = &free, &total
		}
	}
	if cur.HasACL {
		b.ACL = &aclBody{aclInfo: cur.ACL, Reloadable: c.cfg.ReloadACL != nil}
	}
	b.Series = seriesOf(ring)
	writeJSON(ctx, fasthttp.StatusOK, b)
}

func seriesOf(ring []sample) series {
	var s series
	for i := 1; i < len(ring); i++ {
		a, b := ring[i-1], ring[i]
		dt := b.At.Sub(a.At)
		s.At = append(s.At, b.At.Unix())
		s.Accepted = append(s.Accepted, rate(a.Requests["accepted"], b.Requests["accepted"], dt))
		s.Decisions = append(s.Decisions, rate(sum(a.Decisions), sum(b.Decisions), dt))
		s.Delivered = append(s.Delivered, rate(a.Callbacks["delivered"], b.Callbacks["delivered"], dt))
		s.Retried = append(s.Retried, rate(a.Callbacks["retry"], b.Callbacks["retry"], dt))
		s.Failed = append(s.Failed, rate(a.Callbacks["failed"], b.Callbacks["failed"], dt))
		s.Backlog = append(s.Backlog, b.Backlog)
		s.OldestAge = append(s.OldestAge, b.OldestAge)
		s.AuthzP99 = append(s.AuthzP99, ms(quantile(0.99, a.AuthzCall, b.AuthzCall)))
	}
	return s
}

func itoa(n int) string { return strconv.Itoa(n) }
