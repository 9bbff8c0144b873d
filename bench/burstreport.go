package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"
)

// WriteTable prints the burst report.
func (r *BurstReport) WriteTable(w io.Writer) error {
	c, d, m := r.Callbacks, r.Drain, r.Memory
	fmt.Fprintf(w, "\nchargeauth burst: %s, %d requests, %d workers closed loop; %s, %d CPUs, GOMAXPROCS %d\n",
		r.StartedAt.Format(time.RFC3339), r.Config.Requests, r.Config.Concurrency, r.GoVersion, r.NumCPU, r.GOMAXPROCS)
	fmt.Fprintf(w, "chargeauth: authz concurrency %d, max inflight %d, decision timeout %s (nothing times out: the drain rate is measured); fake authz sleeps %s\n\n",
		r.Config.AuthzConcurrency, r.Config.MaxInflight, r.Config.DecisionTimeout, r.Config.FakeDelay)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, v string) { fmt.Fprintf(tw, "%s\t%s\n", name, v) }
	f0 := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	row(fmt.Sprintf("fake capacity answers/s (conc %d, %.1fs)", r.Fake.Concurrency, r.Fake.Seconds), f0(r.Fake.AnswersPerSec))
	row("requests sent", itoa(r.Sent))
	row("202s (acknowledged)", itoa(r.Accepted))
	row("errors", itoa(r.ErrorTotal))
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		row("  "+k, itoa(r.Errors[k]))
	}
	row("load s", fmt.Sprintf("%.2f", r.LoadSeconds))
	row("accepted/s", f0(r.AcceptedPerSec))
	row("callbacks received", itoa(c.Received))
	row("requests with 202 and callback", itoa(c.Matched))
	row("lost (202 without callback)", itoa(c.Lost))
	row("duplicates", itoa(c.Duplicates))
	row("wrong webhook-id", itoa(c.WrongWebhookID))
	row("fake calls during the run", itoa(r.FakeCallsDuringRun))
	row("drain s (first 202 -> last callback)", fmt.Sprintf("%.2f", d.FirstAckToLastCallbackS))
	row("drain rate /s", f0(d.RatePerSec))
	row("  ratio to fake capacity", fmt.Sprintf("%.3f", d.RatioToFake))
	row("after-load drain s (last 202 -> last cb)", fmt.Sprintf("%.2f", d.AfterLoadS))
	row("after-load callbacks", itoa(d.AfterLoadCallbacks))
	row("after-load drain rate /s", f0(d.AfterLoadRatePerSec))
	row("  ratio to fake capacity", fmt.Sprintf("%.3f", d.AfterLoadRatioToFake))
	row("longest stall s (no callback, some owed)", fmt.Sprintf("%.1f", d.LongestStallS))
	row("peak owed (202s without callback yet)", itoa(r.Peaks.Owed))
	row("peak backlog (waiting in the store)", itoa(r.Peaks.Backlog))
	row("peak live request actors", itoa(r.Peaks.Live))
	row("peak authz calls in flight", itoa(r.Peaks.AuthzCalls))
	row("peak callbacks pending in the sender", itoa(r.Peaks.CallbacksPending))
	row("ack p50 / p99 / max ms", fmt.Sprintf("%s / %s / %s", fmtMs(r.Ack.P50), fmtMs(r.Ack.P99), fmtMs(r.Ack.Max)))
	row(fmt.Sprintf("ack during drain (n=%d) p50 / p99 / max ms", r.AckDuringDrain.Count),
		fmt.Sprintf("%s / %s / %s", fmtMs(r.AckDuringDrain.P50), fmtMs(r.AckDuringDrain.P99), fmtMs(r.AckDuringDrain.Max)))
	row("baseline heap MiB (before the load)", mib(m.BaselineHeapBytes))
	row(fmt.Sprintf("peak heap (HeapAlloc) MiB, at t=%.1fs", m.PeakHeapAtS), mib(m.PeakHeapAllocBytes))
	row("peak HeapInuse MiB", mib(m.PeakHeapInuseBytes))
	row("peak live heap MiB (marked by a GC)", mib(m.PeakHeapLiveBytes))
	row("peak RSS MiB", mib(m.PeakRSSBytes))
	row("bench bookkeeping in the heap MiB", mib(m.BenchBookkeepingBytes))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\ndecisions in callbacks: %s\n", statuses(c.Statuses))
	fmt.Fprintf(w, "peak RSS: %s\n", m.RSSSource)
	if m.HeapProfile != "" {
		fmt.Fprintf(w, "heap profile: %s\n", m.HeapProfile)
	}
	for _, k := range slices.Sorted(maps.Keys(r.ErrorExamples)) {
		fmt.Fprintf(w, "%s, first: %q\n", k, r.ErrorExamples[k])
	}
	if c.Unmatched+c.BadCallbacks+c.BadAcks > 0 {
		fmt.Fprintf(w, "unmatched callbacks %d, bad callbacks %d, 202s without request_id %d\n", c.Unmatched, c.BadCallbacks, c.BadAcks)
	}
	if d.TimedOut {
		fmt.Fprintf(w, "gave up waiting for callbacks after %.1fs\n", d.WaitedS)
	}
	if len(r.Fake.Errors) > 0 {
		fmt.Fprintf(w, "fake probe errors: %v\n", r.Fake.Errors)
	}
	fmt.Fprintln(w, "in-process: the load generator, the fake authorization service and the callback sink share the heap and the CPUs with chargeauth")
	return nil
}
