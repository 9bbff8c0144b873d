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

// Ratios compare chargeauth with the ceiling.
type Ratios struct {
	// Throughput is chargeauth's 202s/s over the ceiling's.
	Throughput float64 `json:"throughput"`
	// AckP99 is chargeauth's ack p99 over the ceiling's.
	AckP99 float64 `json:"ack_p99"`
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

func newSummary(started time.Time, load LoadConfig, ch ChargeauthConfig, ceiling, chargeauth *Report) *Summary {
	s := &Summary{
		StartedAt: started.UTC(), GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Load: loadJSON{
			Concurrency: load.Concurrency, Duration: load.Duration.String(), Requests: load.Requests,
			Rate: load.Rate, Loop: "closed", Timeout: load.Timeout.String(),
		},
		Ceiling: ceiling, Chargeauth: chargeauth,
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
	if ceiling.AcceptedPerSec > 0 {
		s.Ratios.Throughput = round3(chargeauth.AcceptedPerSec / ceiling.AcceptedPerSec)
	}
	if ceiling.Ack.P99 > 0 {
		s.Ratios.AckP99 = round3(chargeauth.Ack.P99 / ceiling.Ack.P99)
	}
	return s
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

// WriteTable prints s as a table: one column per workload, then the ratio.
func (s *Summary) WriteTable(w io.Writer) error {
	c, a := s.Ceiling, s.Chargeauth
	fmt.Fprintf(w, "chargeauth bench: %s, %d workers, %s loop, duration %s, requests %d; %s, %d CPUs, GOMAXPROCS %d\n\n",
		s.StartedAt.Format(time.RFC3339), s.Load.Concurrency, s.Load.Loop, s.Load.Duration, s.Load.Requests,
		s.GoVersion, s.NumCPU, s.GOMAXPROCS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name, ceiling, chargeauth, ratio string) {
		fmt.Fprintf(tw, "%-24s\t%s\t%s\t%s\t\n", name, ceiling, chargeauth, ratio)
	}
	none := "-"
	row("", "ceiling", "chargeauth", "chargeauth/ceiling")
	row("requests sent", itoa(c.Sent), itoa(a.Sent), "")
	row("202s", itoa(c.Accepted), itoa(a.Accepted), "")
	row("errors", itoa(c.ErrorTotal), itoa(a.ErrorTotal), "")
	for _, k := range errorKinds(c, a) {
		row("  "+k, itoa(c.Errors[k]), itoa(a.Errors[k]), "")
	}
	row("elapsed s", fmt.Sprintf("%.2f", c.ElapsedSeconds), fmt.Sprintf("%.2f", a.ElapsedSeconds), "")
	row("accepted/s", fmt.Sprintf("%.0f", c.AcceptedPerSec), fmt.Sprintf("%.0f", a.AcceptedPerSec), fmt.Sprintf("%.3f", s.Ratios.Throughput))
	lat := func(name string, f func(Latency) float64, ratio string) {
		row(name, fmtMs(f(c.Ack)), fmtMs(f(a.Ack)), ratio)
	}
	lat("ack p50 ms", func(l Latency) float64 { return l.P50 }, "")
	lat("ack p90 ms", func(l Latency) float64 { return l.P90 }, "")
	lat("ack p99 ms", func(l Latency) float64 { return l.P99 }, fmt.Sprintf("%.3f", s.Ratios.AckP99))
	lat("ack p99.9 ms", func(l Latency) float64 { return l.P999 }, "")
	lat("ack max ms", func(l Latency) float64 { return l.Max }, "")
	if cb := a.Callbacks; cb != nil {
		row("callbacks received", none, itoa(cb.Received), "")
		row("distinct webhook-ids", none, itoa(cb.Distinct), "")
		row("lost (202s - distinct)", none, itoa(cb.Lost), "")
		row("duplicates", none, itoa(cb.Duplicates), "")
		row("drain s", none, fmt.Sprintf("%.2f", cb.DrainSeconds), "")
		row("e2e p50 ms", none, fmtMs(cb.E2E.P50), "")
		row("e2e p99 ms", none, fmtMs(cb.E2E.P99), "")
		row("e2e max ms", none, fmtMs(cb.E2E.Max), "")
	}
	if c.Memory != nil && a.Memory != nil {
		row("peak heap MiB", mib(c.Memory.PeakHeapBytes), mib(a.Memory.PeakHeapBytes), "")
		row("peak RSS MiB", mib(c.Memory.PeakRSSBytes), mib(a.Memory.PeakRSSBytes), "")
		perReq := func(r *Report) string {
			return fmt.Sprintf("%.1f", r.Memory.CPUSeconds*1e6/float64(max(r.Accepted, 1)))
		}
		row("CPU us per 202", perReq(c), perReq(a), fmt.Sprintf("%.2f",
			a.Memory.CPUSeconds*float64(max(c.Accepted, 1))/float64(max(a.Accepted, 1))/max(c.Memory.CPUSeconds, 1e-9)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nmemory is the whole process (%s)\n", memNote)
	for _, r := range []*Report{c, a} {
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
