package console

import (
	"encoding/json"
	"io/fs"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestConsole(t *testing.T, reg prometheus.Gatherer, clk *clock) *Console {
	t.Helper()
	c, err := New(Config{
		Token: "the-admin-token", Gatherer: reg, SampleEvery: time.Hour, Samples: 4, now: clk.now,
		Redeliver: func(string) (session.Record, error) { return session.Record{}, nil },
		Failed:    func(time.Time, time.Time, string, int) ([]string, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A login lasts SessionTTL, is named in logs by a digest that is not the
// cookie, and ends at logout.
func TestSessionsExpire(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	s := newSessions(time.Hour, clk.now)
	id, name := s.create()
	if strings.Contains(name, id) || !strings.HasPrefix(name, "console:") || len(id) < 40 {
		t.Fatalf("id %q name %q", id, name)
	}
	if got, ok := s.valid([]byte(id)); !ok || got != name {
		t.Fatalf("fresh session: %q %v", got, ok)
	}
	if _, ok := s.valid([]byte(id + "x")); ok {
		t.Fatal("a different id is valid")
	}
	clk.t = clk.t.Add(time.Hour - time.Second)
	if _, ok := s.valid([]byte(id)); !ok {
		t.Fatal("expired early")
	}
	clk.t = clk.t.Add(time.Second)
	if _, ok := s.valid([]byte(id)); ok {
		t.Fatal("valid after its TTL")
	}
	id2, _ := s.create()
	if _, ok := s.end([]byte(id2)); !ok {
		t.Fatal("logout did not find the session")
	}
	if _, ok := s.valid([]byte(id2)); ok {
		t.Fatal("valid after logout")
	}
}

// At most maxSessions logins are kept; the oldest goes first.
func TestSessionsBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	s := newSessions(time.Hour, clk.now)
	first, _ := s.create()
	for range maxSessions {
		clk.t = clk.t.Add(time.Millisecond)
		s.create()
	}
	if n := len(s.mu.m); n != maxSessions {
		t.Fatalf("%d sessions kept, want %d", n, maxSessions)
	}
	if _, ok := s.valid([]byte(first)); ok {
		t.Fatal("the oldest session survived")
	}
}

// The overview's rates, quantiles and sparklines come from the ring of
// samples: counters' increases over the time between samples.
func TestOverviewFromSamples(t *testing.T) {
	reg := prometheus.NewRegistry()
	req := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chargeauth_requests_total"}, []string{"outcome"})
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chargeauth_decisions_total"}, []string{"status", "decided_by"})
	cb := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chargeauth_callback_attempts_total"}, []string{"result"})
	authz := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "chargeauth_authz_call_seconds", Buckets: []float64{0.001, 0.01, 0.1}})
	backlog := prometheus.NewGauge(prometheus.GaugeOpts{Name: "chargeauth_backlog"})
	breaker := prometheus.NewGauge(prometheus.GaugeOpts{Name: "chargeauth_authz_breaker_state"})
	reg.MustRegister(req, dec, cb, authz, backlog, breaker)

	clk := &clock{t: time.Unix(1e9, 0)}
	c := newTestConsole(t, reg, clk) // takes the first sample now
	req.WithLabelValues("accepted").Add(20)
	req.WithLabelValues("invalid").Add(2)
	dec.WithLabelValues("allowed", "authz").Add(15)
	dec.WithLabelValues("unknown", "timeout").Add(5)
	cb.WithLabelValues("delivered").Add(10)
	for range 99 {
		authz.Observe(0.005) // in the (1ms, 10ms] bucket
	}
	authz.Observe(0.05)
	backlog.Set(7)
	breaker.Set(2)
	clk.t = clk.t.Add(10 * time.Second)
	c.sampler.take()

	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/console/api/overview")
	ctx.Request.Header.Set("Authorization", "Bearer the-admin-token")
	c.Handle(&ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("overview: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	var o overviewBody
	if err := json.Unmarshal(ctx.Response.Body(), &o); err != nil {
		t.Fatal(err)
	}
	if o.Who != "token" || o.Accepted != 20 || o.Refused != 2 || o.Backlog != 7 || o.Authz.Breaker != "open" {
		t.Errorf("current values: who %q accepted %v refused %v backlog %v breaker %q", o.Who, o.Accepted, o.Refused, o.Backlog, o.Authz.Breaker)
	}
	// The current read is at the same instant as the last sample, so the
	// rates look back to the first sample, 10s earlier.
	if o.Rates.Accepted != 2 || o.Rates.Decisions["allowed"] != 1.5 || o.Rates.Callbacks["delivered"] != 1 || o.Window != 10 {
		t.Errorf("rates: %+v over %vs", o.Rates, o.Window)
	}
	// 99 of 100 calls in (1ms, 10ms]: the median interpolates inside it.
	if o.Authz.P50MS == nil || math.Abs(*o.Authz.P50MS-(1+9*50.0/99)) > 0.01 {
		t.Errorf("p50 %v ms", o.Authz.P50MS)
	}
	if len(o.Series.Accepted) != 1 || o.Series.Accepted[0] != 2 || o.Series.Backlog[0] != 7 {
		t.Errorf("series %+v", o.Series)
	}

	// The ring keeps Samples entries; sparklines have one point fewer.
	for range 10 {
		clk.t = clk.t.Add(2 * time.Second)
		c.sampler.take()
	}
	if n := len(c.sampler.samples()); n != 4 {
		t.Errorf("ring holds %d samples, want 4", n)
	}
	if n := len(seriesOf(c.sampler.samples()).Accepted); n != 3 {
		t.Errorf("%d sparkline points, want 3", n)
	}
}

func TestQuantileWithoutCalls(t *testing.T) {
	h := histogram{Count: 5, Bounds: []float64{1}, Counts: []float64{5}}
	if q := quantile(0.99, h, h); !math.IsNaN(q) {
		t.Errorf("no call between the readings: %v, want NaN", q)
	}
	if ms(math.NaN()) != nil {
		t.Error("NaN should be null in JSON")
	}
}

// The pages keep to the Content-Security-Policy: scripts and styles only
// from files, no inline handler, no style attribute; and the script never
// writes server values as HTML.
func TestAssetsFitTheCSP(t *testing.T) {
	static, _ := fs.Sub(assets, "assets")
	for _, page := range []string{"index.html", "login.html"} {
		b, err := fs.ReadFile(static, page)
		if err != nil {
			t.Fatal(err)
		}
		html := string(b)
		for _, bad := range []*regexp.Regexp{
			regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`),   // inline script
			regexp.MustCompile(`<script(?:\s(?:[^s>]|s[^r])*)?>`), // a script without src
			regexp.MustCompile(`(?i)\sstyle\s*=`),
			regexp.MustCompile(`(?i)<style`),
			regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
			regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//`), // anything from elsewhere
		} {
			if m := bad.FindString(html); m != "" {
				t.Errorf("%s: %q breaks the CSP or loads from elsewhere", page, m)
			}
		}
	}
	js, _ := fs.ReadFile(static, "app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "setAttribute('style'", "new Function"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	css, _ := fs.ReadFile(static, "app.css")
	for _, want := range []string{"prefers-color-scheme: dark", ":focus-visible", "@media (max-width: 600px)", "tabular-nums"} {
		if !strings.Contains(string(css), want) {
			t.Errorf("app.css lacks %s", want)
		}
	}
	if strings.Contains(string(css), "@import") || strings.Contains(string(css), "url(") {
		t.Error("app.css loads something")
	}
}

// Every answer carries the CSP and its companions; assets are served, the
// pages only through their routes.
func TestHeadersAndAssets(t *testing.T) {
	c := newTestConsole(t, prometheus.NewRegistry(), &clock{t: time.Unix(1e9, 0)})
	get := func(path string) *fasthttp.Response {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI(path)
		c.Handle(&ctx)
		r := &fasthttp.Response{}
		ctx.Response.CopyTo(r)
		return r
	}
	for path, want := range map[string]int{
		"/console/assets/app.js": 200, "/console/assets/app.css": 200, "/console/assets/icon.svg": 200,
		"/console/assets/index.html": 404, "/console/assets/../console.go": 303, "/console/assets/nope.js": 404,
		"/console/login": 200, "/console/": 303, "/console/elsewhere": 303,
	} {
		r := get(path)
		if r.StatusCode() != want {
			t.Errorf("GET %s: %d, want %d", path, r.StatusCode(), want)
		}
		if got := string(r.Header.Peek("Content-Security-Policy")); got != csp {
			t.Errorf("GET %s: CSP %q", path, got)
		}
		if string(r.Header.Peek("X-Frame-Options")) != "DENY" || string(r.Header.Peek("X-Content-Type-Options")) != "nosniff" {
			t.Errorf("GET %s: framing or sniffing allowed", path)
		}
	}
	if ct := string(get("/console/assets/app.js").Header.ContentType()); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("app.js content type %q", ct)
	}
}
