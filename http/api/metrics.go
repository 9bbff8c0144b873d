package api

import (
	"math"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// metrics are the service's Prometheus metrics, on a registry of its own
// (several services can run in one test process).
type metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec
	outcomes  map[string]prometheus.Counter // requests by outcome, resolved once
	ack       prometheus.Histogram
	decisions *prometheus.CounterVec
	decideIn  prometheus.Histogram
	authz     *prometheus.CounterVec
	authzIn   prometheus.Histogram
	callbacks *prometheus.CounterVec
	callIn    prometheus.Histogram
}

// latencyBuckets fit every latency measured here: a 202 takes a fraction
// of a millisecond, an authorization call milliseconds, a decision up to the
// decision timeout (10s by default) and a callback attempt up to its timeout
// (10s). 16 buckets from 0.2ms to 30s, each about 2.2 times the last.
var latencyBuckets = prometheus.ExponentialBucketsRange(0.0002, 30, 16)

var requestOutcomes = []string{"accepted", "invalid", "too_large", "unsupported_media_type", "method_not_allowed", "unavailable"}

func newMetrics(engine func() *actors.Engine, store *persistence.Store) *metrics {
	latency := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help,
			Buckets: latencyBuckets})
	}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chargeauth_requests_total", Help: "Session requests answered by the public API, by outcome.",
		}, []string{"outcome"}),
		outcomes: make(map[string]prometheus.Counter),
		ack:      latency("chargeauth_ack_seconds", "Time to answer a POST, from parsing to the answer (202 or not)."),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chargeauth_decisions_total", Help: "Decisions made, by status and cause (authz or timeout).",
		}, []string{"status", "decided_by"}),
		decideIn: latency("chargeauth_decision_seconds", "Time from accept to a durable decision."),
		authz: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chargeauth_authz_calls_total", Help: "Calls to the authorization service, by result (answered, error, breaker_open).",
		}, []string{"result"}),
		authzIn: latency("chargeauth_authz_call_seconds", "Duration of a call to the authorization service."),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chargeauth_callback_attempts_total", Help: "Callback attempts, by result (delivered, retry, failed).",
		}, []string{"result"}),
		callIn: latency("chargeauth_callback_attempt_seconds", "Duration of a callback attempt, including storing its outcome."),
	}
	for _, o := range requestOutcomes {
		m.outcomes[o] = m.requests.WithLabelValues(o)
	}
	for _, r := range []string{"answered", "error", "breaker_open"} {
		m.authz.WithLabelValues(r)
	}
	for _, r := range []string{"delivered", "retry", "failed"} {
		m.callbacks.WithLabelValues(r)
	}
	gauge := func(name, help string, f func(*actors.Engine) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if e := engine(); e != nil {
				return float64(f(e))
			}
			return 0
		})
	}
	m.reg.MustRegister(
		m.requests, m.ack, m.decisions, m.decideIn, m.authz, m.authzIn, m.callbacks, m.callIn,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("chargeauth_live_requests", "Live request actors.", (*actors.Engine).LiveRequests),
		gauge("chargeauth_backlog", "Accepted requests waiting in the store for a request actor.", (*actors.Engine).Backlog),
		gauge("chargeauth_authz_calls_in_flight", "Calls to the authorization service in flight.", (*actors.Engine).AuthzCallsInFlight),
		gauge("chargeauth_pipeline_paced", "1 while the pipeline yields to a hot front (admissions paced), 0 at full speed.", func(e *actors.Engine) int64 {
			if e.Paced() {
				return 1
			}
			return 0
		}),
		gauge("chargeauth_callbacks_pending", "Callbacks held in memory: queued, waiting to retry or in flight (the rest wait in the store).", (*actors.Engine).CallbacksPending),
		&storeCollector{store: store},
	)
	return m
}

// outcome counts one answered POST.
func (m *metrics) outcome(o string) { m.outcomes[o].Inc() }

// observer feeds the engine's measurements into the metrics.
func (m *metrics) observer() actors.Observer {
	return actors.Observer{
		AuthzCall: func(result string, took time.Duration) {
			m.authz.WithLabelValues(result).Inc()
			if result != "breaker_open" {
				m.authzIn.Observe(took.Seconds())
			}
		},
		Decided: func(status session.Status, by session.DecidedBy, took time.Duration) {
			m.decisions.WithLabelValues(string(status), string(by)).Inc()
			m.decideIn.Observe(took.Seconds())
		},
		CallbackAttempt: func(result string, took time.Duration) {
			m.callbacks.WithLabelValues(result).Inc()
			m.callIn.Observe(took.Seconds())
		},
	}
}

// storeCollector reads the store's counts and Pebble's own metrics at
// scrape time.
type storeCollector struct{ store *persistence.Store }

var (
	descRecords = prometheus.NewDesc("chargeauth_records", "Stored requests by state.", []string{"state"}, nil)
	descDisk    = prometheus.NewDesc("chargeauth_pebble_disk_usage_bytes", "Disk space used by the Pebble store.", nil, nil)
	descDebt    = prometheus.NewDesc("chargeauth_pebble_compaction_debt_bytes", "Pebble's estimated compaction debt.", nil, nil)
	descFsync   = prometheus.NewDesc("chargeauth_pebble_wal_fsync_seconds", "Pebble WAL fsync latency.", nil, nil)
	descFail    = prometheus.NewDesc("chargeauth_store_write_failures_total", "Store writes refused or failed, by cause (disk_full, io, read_only, closing).", []string{"cause"}, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecords, descDisk, descDebt, descFsync, descFail} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range []session.State{session.StatePending, session.StateDecided, session.StateDelivered, session.StateFailed} {
		ch <- prometheus.MustNewConstMetric(descRecords, prometheus.GaugeValue, float64(c.store.Count(s)), string(s))
	}
	for cause, n := range c.store.WriteFailures() {
		ch <- prometheus.MustNewConstMetric(descFail, prometheus.CounterValue, float64(n), cause)
	}
	pm, err := c.store.Metrics()
	if err != nil {
		return // closing or recovering: no Pebble metrics this scrape
	}
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(pm.DiskSpaceUsage()))
	ch <- prometheus.MustNewConstMetric(descDebt, prometheus.GaugeValue, float64(pm.Compact.EstimatedDebt))
	if h := pm.LogWriter.FsyncLatency; h != nil {
		// Pebble observes nanoseconds; re-expose in seconds.
		var d dto.Metric
		if h.Write(&d) == nil && d.Histogram != nil {
			buckets := make(map[float64]uint64, len(d.Histogram.Bucket))
			for _, b := range d.Histogram.Bucket {
				if ub := b.GetUpperBound(); !math.IsInf(ub, 1) {
					buckets[ub/1e9] = b.GetCumulativeCount()
				}
			}
			ch <- prometheus.MustNewConstHistogram(descFsync, d.Histogram.GetSampleCount(), d.Histogram.GetSampleSum()/1e9, buckets)
		}
	}
}

// registerOps adds what an on-call engineer reads first: build, readiness,
// the authorization breaker, the ACL and the callback backlog's age.
func (m *metrics) registerOps(s *Server) {
	version, revision := BuildInfo()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "chargeauth_build_info", Help: "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(
		buildInfo,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chargeauth_ready", Help: "1 while /readyz answers 200, else 0.",
		}, func() float64 { return b2f(s.readiness() == nil) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chargeauth_authz_breaker_state",
			Help: "The authorization service circuit breaker: 0 closed, 1 half-open (probing), 2 open (calls fail at once).",
		}, func() float64 {
			if e := s.cfg.Engine(); e != nil {
				return float64(e.BreakerState())
			}
			return 0
		}),
		&backlogAgeCollector{store: s.store, now: s.cfg.Now},
	)
	if s.cfg.ACLStatus != nil {
		m.reg.MustRegister(&aclCollector{status: s.cfg.ACLStatus})
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// BuildInfo returns the running binary's module version ("(devel)" for a
// build from a checkout) and VCS revision ("unknown" when the build did not
// record one, as in tests).
func BuildInfo() (version, revision string) {
	version, revision = "unknown", "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision
	}
	if info.Main.Version != "" {
		version = info.Main.Version
	}
	for _, st := range info.Settings {
		if st.Key == "vcs.revision" && st.Value != "" {
			revision = st.Value
		}
	}
	return version, revision
}

// backlogAgeScan bounds the records read per scrape for the backlog's age.
const backlogAgeScan = 64

var descBacklogAge = prometheus.NewDesc("chargeauth_callback_oldest_undelivered_age_seconds",
	"Time since the oldest undelivered callback became due (its decision, or its redelivery); 0 when none waits.", nil, nil)

// backlogAgeCollector reads, at scrape time, the first decided (decided, not
// yet delivered) records in id order, which is accept order, and reports
// the longest wait among them since the decision or the last redelivery.
// At most backlogAgeScan records are read, so a scrape costs the same with
// a backlog of ten or ten million.
type backlogAgeCollector struct {
	store *persistence.Store
	now   func() time.Time
}

func (c *backlogAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descBacklogAge }

func (c *backlogAgeCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	var oldest time.Duration
	err := c.store.Scan(session.StateDecided, "", backlogAgeScan, func(r session.Record) bool {
		since := r.DecidedAt
		if r.RedeliveredAt.After(since) {
			since = r.RedeliveredAt
		}
		if !since.IsZero() {
			oldest = max(oldest, now.Sub(since))
		}
		return true
	})
	if err != nil {
		return // closing or recovering: no value this scrape
	}
	ch <- prometheus.MustNewConstMetric(descBacklogAge, prometheus.GaugeValue, oldest.Seconds())
}

var (
	descACLInfo     = prometheus.NewDesc("chargeauth_acl_info", "Always 1; the version label is the loaded ACL's version (a hash of the file).", []string{"version"}, nil)
	descACLEntries  = prometheus.NewDesc("chargeauth_acl_entries", "Entries in the loaded ACL.", nil, nil)
	descACLLoadedAt = prometheus.NewDesc("chargeauth_acl_last_reload_success_timestamp_seconds", "When the ACL was last loaded successfully (unix seconds): at start, then at each good reload.", nil, nil)
	descACLFailures = prometheus.NewDesc("chargeauth_acl_reload_failures_total", "ACL reloads that failed and kept the loaded ACL.", nil, nil)
)

// aclCollector reports the embedded authorization service's ACL.
type aclCollector struct{ status func() authz.ACLStatus }

func (c *aclCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descACLInfo, descACLEntries, descACLLoadedAt, descACLFailures} {
		ch <- d
	}
}

func (c *aclCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	ch <- prometheus.MustNewConstMetric(descACLInfo, prometheus.GaugeValue, 1, st.Version)
	ch <- prometheus.MustNewConstMetric(descACLEntries, prometheus.GaugeValue, float64(st.Entries))
	ch <- prometheus.MustNewConstMetric(descACLLoadedAt, prometheus.GaugeValue, float64(st.LoadedAt.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(descACLFailures, prometheus.CounterValue, float64(st.ReloadFailures))
}
