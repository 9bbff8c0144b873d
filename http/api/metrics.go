package api

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// metrics are the service's Prometheus metrics, on a registry of its own
// (several services can run in one test process).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
}

func newMetrics(engine func() *actors.Engine, store *persistence.Store) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chargeauth_requests_total",
			Help: "Session requests answered by the public API, by outcome.",
		}, []string{"outcome"}),
	}
	for _, o := range []string{"accepted", "invalid", "too_large", "unsupported_media_type", "method_not_allowed", "unavailable"} {
		m.requests.WithLabelValues(o)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		m.requests,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("chargeauth_live_requests", "Live request actors.", func() float64 {
			if e := engine(); e != nil {
				return float64(e.LiveRequests())
			}
			return 0
		}),
		gauge("chargeauth_backlog", "Accepted requests waiting in the store for a request actor.", func() float64 {
			if e := engine(); e != nil {
				return float64(e.Backlog())
			}
			return 0
		}),
		gauge("chargeauth_authz_calls_in_flight", "Calls to the authorization service in flight.", func() float64 {
			if e := engine(); e != nil {
				return float64(e.AuthzCallsInFlight())
			}
			return 0
		}),
		gauge("chargeauth_callbacks_pending", "Callbacks queued, waiting to retry or in flight.", func() float64 {
			if e := engine(); e != nil {
				return float64(e.CallbacksPending())
			}
			return 0
		}),
	)
	states := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chargeauth_records", Help: "Stored requests by state."}, []string{"state"})
	m.reg.MustRegister(collectorFunc{desc: states, collect: func(ch chan<- prometheus.Metric) {
		for _, s := range []session.State{session.StatePending, session.StateDecided, session.StateDelivered, session.StateFailed} {
			g := states.WithLabelValues(string(s))
			g.Set(float64(store.Count(s)))
			ch <- g
		}
	}})
	return m
}

func (m *metrics) outcome(o string) { m.requests.WithLabelValues(o).Inc() }

// collectorFunc refreshes a GaugeVec at scrape time.
type collectorFunc struct {
	desc    *prometheus.GaugeVec
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { c.desc.Describe(ch) }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
