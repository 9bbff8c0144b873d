package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what one workload measured.
type Report struct {
	Workload string `json:"workload"`
	Sent     int64  `json:"requests_sent"`
	Accepted int64  `json:"accepted"`
	// Errors counts failures by kind: http_<code> for a status other than
	// 202, transport_<kind> for no answer. ErrorExamples holds the first
	// answer body or error text of each kind.
	Errors         map[string]int64  `json:"errors"`
	ErrorTotal     int64             `json:"error_total"`
	ErrorExamples  map[string]string `json:"error_examples,omitempty"`
	ElapsedSeconds float64           `json:"elapsed_s"`
	AcceptedPerSec float64           `json:"accepted_per_s"`
	// Ack is request sent (or due, open loop) -> 202 read.
	Ack       Latency         `json:"ack"`
	Callbacks *CallbackReport `json:"callbacks,omitempty"`
	Memory    *MemoryReport   `json:"memory,omitempty"`
	// Timeline has a point per second since the load started, through
	// the drain for chargeauth (timeline.go).
	Timeline []TimelinePoint `json:"timeline"`
}

func newReport(workload string, res loadResult) *Report {
	r := &Report{
		Workload: workload, Sent: res.Sent, Accepted: res.Accepted,
		Errors: res.Errors, ErrorExamples: res.Examples,
		ElapsedSeconds: res.Elapsed.Seconds(), Ack: res.Ack.Summary(),
		Timeline: res.Timeline.points(false),
	}
	for _, n := range res.Errors {
		r.ErrorTotal += n
	}
	if s := res.Elapsed.Seconds(); s > 0 {
		r.AcceptedPerSec = math.Round(float64(res.Accepted)/s*10) / 10
	}
	return r
}

// Ratios compare chargeauth with the ceiling and the durable ceiling.
type Ratios struct {
	// Throughput is chargeauth's 202s/s over the ceiling's.
	Throughput float64 `json:"throughput"`
	// AckP99 is chargeauth's ack p99 over the ceiling's.
	AckP99 float64 `json:"ack_p99"`
	// DurableThroughput and DurableAckP99 are the same over the durable
	// ceiling's.
	DurableThroughput float64 `json:"durable_throughput"`
	DurableAckP99     float64 `json:"durable_ack_p99"`
}

// Summary is the whole run: what the JSON report holds.
type Summary struct {
	StartedAt  time.Time `json:"started_at"`
	GoVersion  string    `json:"go_version"`
	GOOS       string    `json:"goos"`
	GOARCH     string    `json:"goarch"`
	NumCPU     int       `json:"num_cpu"`
	GOMAXPROCS int       `json:"gomaxprocs"`
	Load       loadJSON  `json:"load"`
	Ceiling    *Report   `json:"ceiling"`
	Durable    *Report   `json:"durable_ceiling"`
	Chargeauth *Report   `json:"chargeauth"`
	Ratios     Ratios    `json:"ratios"`
	Notes      []string  `json:"notes"`
	Extra      extraJSON `json:"chargeauth_config"`
}

type loadJSON struct {
	Concurrency int     `json:"concurrency"`
	Duration    string  `json:"duration"`
	Requests    int64   `json:"requests"`
	Rate        float64 `json:"rate"`
	Loop        string  `json:"loop"`
	Timeout     string  `json:"timeout"`
}

type extraJSON struct {
	DataDirParent    string `json:"data_dir_parent"`
	AuthzConcurrency int    `json:"authz_concurrency"`
	AuthzDelay       string `json:"authz_delay"`
	DrainTimeout     string `json:"drain_timeout"`
}

func newSummary(started time.Time, load LoadConfig, ch ChargeauthConfig, ceiling, durable, chargeauth *Report) *Summary {
	s := &Summary{
		StartedAt: started.UTC(), GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Load: loadJSON{
			Concurrency: load.Concurrency, Duration: load.Duration.String(), Requests: load.Requests,
			Rate: load.Rate, Loop: "closed", Timeout: load.Timeout.String(),
		},
		Ceiling: ceiling, Durable: durable, Chargeauth: chargeauth,
		Extra: extraJSON{DataDirParent: cmp.Or(ch.TempDir, os.TempDir()), AuthzConcurrency: ch.AuthzConcurrency, AuthzDelay: ch.AuthzDelay.String(),
			DrainTimeout: ch.DrainTimeout.String()},
		Notes: []string{
			"ack latency: request sent (open loop: due) -> 202 read; e2e: 202 read -> callback received, by webhook-id",
			"memory: " + memNote,
			"the load generator, the service and its store share this machine's cores",
		},
	}
	if load.Rate > 0 {
		s.Load.Loop = "open"
	}
	s.Ratios.Throughput = ratio(chargeauth.AcceptedPerSec, ceiling.AcceptedPerSec)
	s.Ratios.AckP99 = ratio(chargeauth.Ack.P99, ceiling.Ack.P99)
	s.Ratios.DurableThroughput = ratio(chargeauth.AcceptedPerSec, durable.AcceptedPerSec)
	s.Ratios.DurableAckP99 = ratio(chargeauth.Ack.P99, durable.Ack.P99)
	return s
}

// ratio is a/b to three decimals, 0 if b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return round3(a / b)
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// WriteJSON writes s to path, making its directory.
func (s *Summary) WriteJSON(path string) error { return writeJSON(path, s) }

// writeJSON writes v, indented, to path, making its directory.
func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteTable prints s as a table: one column per workload, then
// chargeauth's ratios to the ceiling and to the durable ceiling.
func (s *Summary) WriteTable(w io.Writer) error {
	c, d, a := s.Ceiling, s.Durable, s.Chargeauth
	fmt.Fprintf(w, "chargeauth bench: %s, %d workers, %s loop, duration %s, requests %d; %s, %d CPUs, GOMAXPROCS %d\n\n",
		s.StartedAt.Format(time.RFC3339), s.Load.Concurrency, s.Load.Loop, s.Load.Duration, s.Load.Requests,
		s.GoVersion, s.NumCPU, s.GOMAXPROCS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	// row prints a figure of each workload, then the ratios if any.
	row := func(name string, f func(*Report) string, ratios ...float64) {
		cells := []string{name, f(c), f(d), f(a), "", ""}
		for i, r := range ratios {
			cells[4+i] = fmt.Sprintf("%.3f", r)
		}
		fmt.Fprintf(tw, "%-24s\t%s\t\n", cells[0], strings.Join(cells[1:], "\t"))
	}
	only := func(f func(*Report) string) func(*Report) string { // chargeauth's alone
		return func(r *Report) string {
			if r != a {
				return "-"
			}
			return f(r)
		}
	}
	fmt.Fprintf(tw, "%-24s\t%s\t\n", "", strings.Join([]string{"ceiling", "durable", "chargeauth", "/ceiling", "/durable"}, "\t"))
	row("requests sent", func(r *Report) string { return itoa(r.Sent) })
	row("202s", func(r *Report) string { return itoa(r.Accepted) })
	row("errors", func(r *Report) string { return itoa(r.ErrorTotal) })
	for _, k := range errorKinds(c, d, a) {
		row("  "+k, func(r *Report) string { return itoa(r.Errors[k]) })
	}
	row("elapsed s", func(r *Report) string { return fmt.Sprintf("%.2f", r.ElapsedSeconds) })
	row("accepted/s", func(r *Report) string { return fmt.Sprintf("%.0f", r.AcceptedPerSec) },
		s.Ratios.Throughput, s.Ratios.DurableThroughput)
	lat := func(name string, f func(Latency) float64, ratios ...float64) {
		row(name, func(r *Report) string { return fmtMs(f(r.Ack)) }, ratios...)
	}
	lat("ack p50 ms", func(l Latency) float64 { return l.P50 })
	lat("ack p90 ms", func(l Latency) float64 { return l.P90 })
	lat("ack p99 ms", func(l Latency) float64 { return l.P99 }, s.Ratios.AckP99, s.Ratios.DurableAckP99)
	lat("ack p99.9 ms", func(l Latency) float64 { return l.P999 })
	lat("ack max ms", func(l Latency) float64 { return l.Max })
	if cb := a.Callbacks; cb != nil {
		row("callbacks received", only(func(*Report) string { return itoa(cb.Received) }))
		row("distinct webhook-ids", only(func(*Report) string { return itoa(cb.Distinct) }))
		row("lost (202s - distinct)", only(func(*Report) string { return itoa(cb.Lost) }))
		row("duplicates", only(func(*Report) string { return itoa(cb.Duplicates) }))
		row("drain s", only(func(*Report) string { return fmt.Sprintf("%.2f", cb.DrainSeconds) }))
		row("e2e p50 ms", only(func(*Report) string { return fmtMs(cb.E2E.P50) }))
		row("e2e p99 ms", only(func(*Report) string { return fmtMs(cb.E2E.P99) }))
		row("e2e max ms", only(func(*Report) string { return fmtMs(cb.E2E.Max) }))
	}
	if c.Memory != nil && d.Memory != nil && a.Memory != nil {
		row("peak heap MiB", func(r *Report) string { return mib(r.Memory.PeakHeapBytes) })
		row("peak RSS MiB", func(r *Report) string { return mib(r.Memory.PeakRSSBytes) })
		perReq := func(r *Report) float64 { return r.Memory.CPUSeconds * 1e6 / float64(max(r.Accepted, 1)) }
		row("CPU us per 202", func(r *Report) string { return fmt.Sprintf("%.1f", perReq(r)) },
			ratio(perReq(a), perReq(c)), ratio(perReq(a), perReq(d)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nmemory is the whole process (%s)\n", memNote)
	for _, r := range []*Report{c, d, a} {
		for _, k := range slices.Sorted(maps.Keys(r.ErrorExamples)) {
			fmt.Fprintf(w, "%s %s, first: %q\n", r.Workload, k, r.ErrorExamples[k])
		}
	}
	if cb := a.Callbacks; cb != nil {
		fmt.Fprintf(w, "chargeauth decisions in callbacks: %s\n", statuses(cb.Statuses))
		if cb.DrainTimedOut {
			fmt.Fprintf(w, "chargeauth: gave up waiting for callbacks after %.1fs\n", cb.DrainSeconds)
		}
		if cb.Unmatched+cb.BadWebhookIDs+cb.BadAcks+cb.DuplicateAcks > 0 {
			fmt.Fprintf(w, "chargeauth: unmatched callbacks %d, bad webhook-ids %d, 202s without request_id %d, duplicate 202 ids %d\n",
				cb.Unmatched, cb.BadWebhookIDs, cb.BadAcks, cb.DuplicateAcks)
		}
	}
	return nil
}

func errorKinds(rs ...*Report) []string {
	var kinds []string
	for _, r := range rs {
		for k := range r.Errors {
			if !slices.Contains(kinds, k) {
				kinds = append(kinds, k)
			}
		}
	}
	slices.Sort(kinds)
	return kinds
}

func statuses(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func itoa(n int64) string { return fmt.Sprint(n) }

func fmtMs(v float64) string { return fmt.Sprintf("%.3f", v) }

func mib(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
