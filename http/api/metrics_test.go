package api_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/api"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/schedule"
)

// scrape reads the admin /metrics of svc, parsed.
func scrape(t *testing.T, svc *node.Node) map[string]*dto.MetricFamily {
	t.Helper()
	r := do(t, "GET", "http://"+svc.AdminAddr()+"/metrics", "", nil)
	if r.code != 200 {
		t.Fatalf("GET /metrics: %d %s", r.code, r.body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the gauge or counter name whose labels
// include the given name/value pairs; ok is false when there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// mustMetric is metricValue that fails the test when the series is missing.
func mustMetric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metricValue(fams, name, labels...)
	if !ok {
		t.Fatalf("/metrics has no %s%v", name, labels)
	}
	return v
}

// waitMetric polls /metrics until cond holds for the series' value.
func waitMetric(t *testing.T, svc *node.Node, what string, cond func(float64) bool, name string, labels ...string) {
	t.Helper()
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		v, ok := metricValue(scrape(t, svc), name, labels...)
		if !ok {
			return fmt.Errorf("no %s%v", name, labels)
		}
		if !cond(v) {
			return fmt.Errorf("%s%v = %v, want %s", name, labels, v, what)
		}
		return nil
	})
}

func is(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// The build is named once, as a constant 1 with its labels.
func TestMetricsBuildInfo(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL})
	fams := scrape(t, svc)
	version, revision := api.BuildInfo()
	if v := mustMetric(t, fams, "chargeauth_build_info", "version", version, "revision", revision, "goversion", runtime.Version()); v != 1 {
		t.Errorf("chargeauth_build_info = %v, want 1", v)
	}
	if n := len(fams["chargeauth_build_info"].GetMetric()); n != 1 {
		t.Errorf("%d build_info series, want 1", n)
	}
}

// The latency histograms span 0.2ms to 30s.
func TestMetricsLatencyBuckets(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL})
	fams := scrape(t, svc)
	for _, name := range []string{"chargeauth_ack_seconds", "chargeauth_decision_seconds", "chargeauth_authz_call_seconds", "chargeauth_callback_attempt_seconds"} {
		f := fams[name]
		if f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].Histogram == nil {
			t.Fatalf("%s: not one histogram", name)
		}
		b := f.GetMetric()[0].Histogram.GetBucket()
		if len(b) != 17 || !math.IsInf(b[16].GetUpperBound(), 1) {
			t.Fatalf("%s: %d buckets, want 16 and +Inf", name, len(b))
		}
		if lo, hi := b[0].GetUpperBound(), b[15].GetUpperBound(); lo < 0.00019 || lo > 0.00021 || hi < 29.9 || hi > 30.1 {
			t.Errorf("%s: buckets %v to %v, want 0.0002 to 30", name, lo, hi)
		}
	}
}

// One request's life moves the counts by state and the age of the oldest
// undelivered callback: pending, then decided with a receiver that refuses
// it (the age grows), failed (the age is back to 0), then redelivered and
// delivered.
func TestMetricsRecordsAndBacklogAgeMove(t *testing.T) {
	authz := startFakeAuthz(t, 500*time.Millisecond)
	recv := startReceiver(t)
	var refuse atomic.Bool
	refuse.Store(true)
	recv.answer = func(int) int {
		if refuse.Load() {
			return 500
		}
		return 204
	}
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true, DecisionTimeout: 5 * time.Second,
		CallbackMaxAttempts: 3, CallbackSchedule: schedule.Delays{0, 300 * time.Millisecond}})

	fams := scrape(t, svc)
	for _, st := range []string{"pending", "decided", "delivered", "failed"} {
		if v := mustMetric(t, fams, "chargeauth_records", "state", st); v != 0 {
			t.Errorf("records{%s} = %v before any request", st, v)
		}
	}
	if v := mustMetric(t, fams, "chargeauth_callback_oldest_undelivered_age_seconds"); v != 0 {
		t.Errorf("age = %v with nothing waiting, want 0", v)
	}

	id := mustAccept(t, svc, tokSlow, recv.URL+"/cb") // the fake answers it after 500ms
	waitMetric(t, svc, "1", is(1), "chargeauth_records", "state", "pending")
	waitMetric(t, svc, "1", is(1), "chargeauth_records", "state", "decided")
	waitMetric(t, svc, "over 50ms", func(v float64) bool { return v >= 0.05 }, "chargeauth_callback_oldest_undelivered_age_seconds")
	waitMetric(t, svc, "1", is(1), "chargeauth_records", "state", "failed")
	fams = scrape(t, svc)
	if v := mustMetric(t, fams, "chargeauth_records", "state", "decided"); v != 0 {
		t.Errorf("records{decided} = %v once failed", v)
	}
	if v := mustMetric(t, fams, "chargeauth_callback_oldest_undelivered_age_seconds"); v != 0 {
		t.Errorf("age = %v once failed (nothing waits for delivery), want 0", v)
	}

	refuse.Store(false)
	if r := do(t, "POST", "http://"+svc.AdminAddr()+"/sessions/"+id+"/redeliver", "", nil); r.code != 202 {
		t.Fatalf("redeliver: %d %s", r.code, r.body)
	}
	waitMetric(t, svc, "1", is(1), "chargeauth_records", "state", "delivered")
	fams = scrape(t, svc)
	for _, st := range []string{"pending", "decided", "failed"} {
		if v := mustMetric(t, fams, "chargeauth_records", "state", st); v != 0 {
			t.Errorf("records{%s} = %v once delivered", st, v)
		}
	}
}

// The breaker gauge opens while the authorization service fails and closes
// once it answers again.
func TestMetricsBreakerStateMoves(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	url := serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
		if down.Load() {
			ctx.SetStatusCode(500)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"allowed"}`)
	})
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: url, AllowPrivateCallbacks: true, DecisionTimeout: 10 * time.Second})
	fams := scrape(t, svc)
	if v := mustMetric(t, fams, "chargeauth_authz_breaker_state"); v != 0 {
		t.Fatalf("breaker = %v at start, want 0 (closed)", v)
	}
	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	waitMetric(t, svc, "2 (open)", is(2), "chargeauth_authz_breaker_state")
	waitMetric(t, svc, "at least 1", func(v float64) bool { return v >= 1 }, "chargeauth_authz_calls_total", "result", "breaker_open")
	down.Store(false)
	waitMetric(t, svc, "0 (closed)", is(0), "chargeauth_authz_breaker_state")
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(recv.byID(id)) == 0 {
			return errNoCallback
		}
		return nil
	})
}

// chargeauth_ready follows /readyz: 1 while serving, 0 once closing starts.
func TestMetricsReadyMoves(t *testing.T) {
	authz := startFakeAuthz(t, 3*time.Second)
	svc := startService(t, node.Config{AuthzURL: authz.URL, DecisionTimeout: 10 * time.Second})
	if v := mustMetric(t, scrape(t, svc), "chargeauth_ready"); v != 1 {
		t.Fatalf("ready = %v while serving", v)
	}
	// A live request keeps Close in its grace (1s) while the admin
	// listener still answers.
	mustAccept(t, svc, tokSlow, "http://127.0.0.1:9/cb")
	closed := make(chan struct{})
	go func() { _ = svc.Close(); close(closed) }()
	seen := false
	for !seen {
		select {
		case <-closed:
			t.Fatal("closed before /metrics showed chargeauth_ready 0")
		default:
		}
		if v, ok := metricValue(scrape(t, svc), "chargeauth_ready"); ok && v == 0 {
			seen = true
			if r := do(t, "GET", "http://"+svc.AdminAddr()+"/readyz", "", nil); r.code != 503 {
				t.Errorf("/readyz = %d while chargeauth_ready is 0", r.code)
			}
		}
	}
	<-closed
}

// The ACL's version, load time and reload failures move with reloads of a
// real authorization server's ACL.
func TestMetricsACLMoves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.json")
	writeFile := func(body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(`{"entries":[{"driver_token":"` + tokAllowed + `","status":"active"}]}`)
	a, err := acl.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := authz.NewServer(authz.Config{ACL: a, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() { _ = srv.Shutdown() })
	svc := startService(t, node.Config{AuthzURL: "http://" + ln.Addr().String(), ACLStatus: srv.ACLStatus})

	fams := scrape(t, svc)
	v1 := a.Version()
	if v := mustMetric(t, fams, "chargeauth_acl_info", "version", v1); v != 1 {
		t.Errorf("acl_info{version=%s} = %v", v1, v)
	}
	loaded1 := mustMetric(t, fams, "chargeauth_acl_last_reload_success_timestamp_seconds")
	if now := float64(time.Now().Unix()); loaded1 < now-60 || loaded1 > now+1 {
		t.Errorf("last reload at %v, now is %v", loaded1, now)
	}
	if v := mustMetric(t, fams, "chargeauth_acl_reload_failures_total"); v != 0 {
		t.Errorf("reload failures = %v at start", v)
	}
	if v := mustMetric(t, fams, "chargeauth_acl_entries"); v != 1 {
		t.Errorf("acl entries = %v, want 1", v)
	}

	writeFile(`{"entries":[{"driver_token":"` + tokAllowed + `","status":"blocked"},{"driver_token":"` + tokNotAllowed + `","status":"active"}]}`)
	if err := srv.Reload(path); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, svc)
	v2 := srv.ACLStatus().Version
	if v2 == v1 {
		t.Fatal("the reload did not change the version")
	}
	if _, ok := metricValue(fams, "chargeauth_acl_info", "version", v2); !ok || len(fams["chargeauth_acl_info"].GetMetric()) != 1 {
		t.Errorf("acl_info after reload: %v, want one series with version %s", fams["chargeauth_acl_info"], v2)
	}
	if loaded2 := mustMetric(t, fams, "chargeauth_acl_last_reload_success_timestamp_seconds"); loaded2 <= loaded1 {
		t.Errorf("last reload %v after a good reload, was %v", loaded2, loaded1)
	}
	if v := mustMetric(t, fams, "chargeauth_acl_entries"); v != 2 {
		t.Errorf("acl entries = %v after reload, want 2", v)
	}

	writeFile(`{"entries":[`)
	if err := srv.Reload(path); err == nil {
		t.Fatal("reload of a broken file succeeded")
	}
	fams = scrape(t, svc)
	if v := mustMetric(t, fams, "chargeauth_acl_reload_failures_total"); v != 1 {
		t.Errorf("reload failures = %v after a bad reload, want 1", v)
	}
	if _, ok := metricValue(fams, "chargeauth_acl_info", "version", v2); !ok {
		t.Errorf("a bad reload changed the ACL version")
	}
}

// Without an embedded authorization service there is no ACL to report.
func TestMetricsNoACLWithExternalAuthz(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL})
	if f := scrape(t, svc)["chargeauth_acl_info"]; f != nil {
		t.Errorf("acl_info without an ACL: %v", f)
	}
}
