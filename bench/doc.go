// Command bench measures chargeauth's public front under load, against a
// ceiling measured in the same process and the same run.
//
// By default (-workload compare) it runs three workloads, one after the
// other, with the same load:
//
//   - ceiling: a bare fasthttp handler on 127.0.0.1 that parses the body with
//     session.ParseRequest and answers 202 with a small JSON body. Nothing is
//     stored or decided: it is the most a fasthttp front can do on this
//     machine with this load generator.
//   - durable ceiling ("durable"): the same handler, which first writes the
//     body to a Pebble store (default options) on real disk with one
//     pebble.Sync Set per request. It is the simplest front that loses
//     nothing it acknowledged: what this machine's disk allows a durable
//     accept, with nothing decided.
//   - chargeauth: the whole service (node.Start) on 127.0.0.1, its Pebble store in
//     a fresh directory on real disk (every 202 waits for an fsync), an
//     in-process authorization service (authz.NewServer) whose ACL allows the
//     token sent, and an in-process callback sink that records when each
//     webhook-id arrives.
//
// The load generator is a fasthttp.HostClient driven by -concurrency workers,
// closed loop (each worker sends its next request when the last one is
// answered) or, with -rate, open loop (requests are due at a fixed rate and
// latency counts from when a request was due, so a slow server is not hidden
// by a generator that waits for it). The load stops after -duration or
// -requests, whichever comes first.
//
// What is measured, per workload: requests sent, 202s, errors by kind (an
// HTTP status other than 202, or a transport error such as a timeout), 202s
// per second, and the ack latency (request sent to 202 read) at p50, p90,
// p99, p99.9 and max. For chargeauth, after the load, the run waits (at most
// -drain-timeout, 60s at most) until a callback has arrived for every 202,
// and reports callbacks received, lost (202s without a callback: must be 0),
// duplicates, the decisions the callbacks carried, and the end-to-end latency
// (202 read to callback received, matched by webhook-id = request_id). Peak Go
// heap (HeapAlloc, sampled every 100ms) and peak RSS (VmHWM, reset before each
// workload) are those of the whole process, load generator included.
// Latencies go into HdrHistograms clamped to [1µs, 60s] with 3 significant
// figures (histogram.go). "CPU us per 202" is the process's user and system
// CPU time from the load's start to the drain's end, divided by the 202s;
// its ratio to the ceiling's is the steadiest figure on a shared machine,
// where throughput swings with the neighbours from one run to the next.
//
// -authz-delay D holds every answer of the in-process authorization service
// D long. With D = 50ms (about 1 300 answers a second at the default
// --authz-concurrency 64) the service chargeauth protects is the
// bottleneck, as in production: the accepts run ahead of the decisions,
// the backlog waits on disk, and what passes its 10s deadline there is
// decided unknown without a call, so accepted/s is the front's durable
// capacity. With D = 1ms it is the "1 ms fake authorization service" of
// the end-to-end target.
//
// The bench calls node.ScaleGOMAXPROCS, as serve does, so both workloads
// run with GOMAXPROCS at twice the CPUs (unless GOMAXPROCS is set).
//
// Each workload also keeps a timeline (timeline.go): one point per
// wall-clock second since its load started, T=1 for [0s, 1s), from the
// first second to the last in which anything happened. A point has the 202s
// read in that second and their ack latency p50, p99 and max; for
// chargeauth also the callbacks received in that second (duplicates
// included) and the end-to-end latency p50, p99 and max of the ids whose
// first callback arrived in it, so the seconds after the load show the
// drain. Latencies are 0 in a second without any. The load generator
// records into per-second log-linear histograms with atomic counters (no
// lock; quantiles at most ~3% high, clamped to [1µs, 1h]), not into
// HdrHistograms: the totals above stay the HdrHistograms'.
//
// The report is printed as a table, with the ratios of chargeauth to the
// ceiling (/ceiling) and to the durable ceiling (/durable) for throughput,
// ack p99 and CPU per 202, and written as JSON to -out, each workload's
// timeline in its "timeline" array:
//
//	"timeline": [{"t": 1, "acked": 8410, "ack_p50_ms": 6.911, "ack_p99_ms": 17.663, "ack_max_ms": 24.01,
//	              "callbacks": 6120, "e2e_count": 6120, "e2e_p50_ms": 610.3, "e2e_p99_ms": 1191.9, "e2e_max_ms": 1204.2}, ...]
//
// A chart of the timelines (chart.go, gonum.org/v1/plot) goes next to the
// JSON, with .png for its extension (default bench/out/report.png): a
// 1200px-wide PNG of three panels sharing the time axis, each workload's
// time counted from its own load start: ack latency p50 (solid) and p99
// (dashed) of the ceiling (blue), the durable ceiling (orange) and
// chargeauth (red) on a log scale; chargeauth's end-to-end latency p50 and
// p99 on a log scale; and the 202s per second of all three with
// chargeauth's callbacks per second (green). A
// dotted vertical line marks where each load ended; what follows is the
// drain. The title gives the run's parameters.
//
// All traffic stays on 127.0.0.1. Run it with
//
//	go run ./bench                      # 10s, 64 workers, closed loop
//	go run ./bench -duration 30s -concurrency 128
//	go run ./bench -rate 2000 -duration 20s
//	go run ./bench -requests 10000 -duration 0
//	go run ./bench -cpuprofile cpu.out  # profiles the chargeauth workload
//
// With -workload burst (burst.go) it runs another workload instead: a
// fake authorization service on 127.0.0.1 answers {"status":"allowed"}
// after -fake-delay (1ms); its capacity is measured first, driven directly
// at concurrency 64 for 3s. Then chargeauth (node.Start, Pebble on disk,
// authz concurrency 64, max inflight 10000, decision timeout
// -decision-timeout, 1h, so that nothing times out and the drain rate is
// measured) gets -burst N requests, closed loop, as fast as it acknowledges
// them; each request carries its sequence number in its driver token, which
// the callback echoes, so the sink matches every callback to its 202 (and
// its webhook-id to the 202's request_id) without a map. The run waits (at
// most -drain-timeout, 30m for burst) for a callback per 202 and reports
// the fake's capacity, 202s/s, lost callbacks (must be 0), the drain rate
// (first 202 -> last callback, and after the load only) and its ratio to
// the fake's capacity, ack latency overall and for requests sent while
// callbacks were owed, peak heap and RSS, the peaks of the backlog (in the
// store), live request actors and callbacks pending in the sender, and a
// time series sampled every 100ms (to the JSON report, default
// bench/out/burst-N.json; a line every 5s on stdout). It keeps the same
// per-second timeline (the e2e latency from the 202's time in the request's
// slot, 10µs resolution) and draws the same chart, chargeauth only, to
// bench/out/burst-N.png. -heapprofile writes a heap profile near the
// heap's peak.
//
//	go run ./bench -workload burst -burst 100000
//	go run ./bench -workload burst -burst 1000000 -heapprofile bench/out/heap.pprof
//	go run ./bench -workload burst -burst 100000 -fake-delay 50ms  # authz-bound: the backlog waits in the store
//
// With -workload merit (merit.go) it reports the figures of merit of the
// README in one run, each server its own process: the bare ceiling and the
// durable ceiling (this binary started again as a server, by the
// CHARGEAUTH_BENCH_SERVE variable) and chargeauth (the binary's serve, built
// from ./cmd/chargeauth unless -chargeauth-bin names one; its embedded
// authorization service allows the token sent; --allow-private-callbacks,
// --drain-delay 0s, --log-level warn, plus -chargeauth-args). Each server is
// started fresh on a fresh directory for each load: first open loop at
// -rate (default 3000/s) for -duration, then a closed-loop burst of -burst
// requests (default 20000; the figure is 200000) at -concurrency
// connections (64). The CPU of a server is its process's utime + stime from
// /proc/<pid>/stat (all threads, 10ms ticks), read when the load starts and
// when the last request completed, divided by the completed requests: a 202
// for the ceilings, a 202 whose callback reached the sink for chargeauth
// (so its decision and delivery count). The load generator and the
// callback sink are this process and are never counted. The table gives
// accepts/s, ack p50/p99/max, CPU us per completed request, the server's
// peak RSS (VmHWM) and chargeauth's lost callbacks and drain, with the
// ratios /bare and /durable, and the load average as each phase began
// (the machine is shared: compare CPU per request, not throughput).
// -chargeauth-bin-b measures a second binary right after the first under
// each load (an A/B in one run; column chargeauth-b and the ratio b/a);
// -chargeauth-args-b and -chargeauth-env-b, extra arguments and environment
// for it (an A/B of settings, with the same binary unless -chargeauth-bin-b
// is given). -relay adds the relay ceilings: the durable one that also
// POSTs each request's callback (allowed, with a webhook-id) to the sink
// on up to 64 kept-alive connections, from a goroutine per request after
// the 202 (relay), or from the handler before the 202 (relay-inline: no
// hand-off at all, the CPU floor; its ack latency includes the callback),
// and relay-inline that first asks chargeauth's authorization service,
// served in the relay's own process, through chargeauth's batching client
// (relay-authz: the whole contract with no hand-off; its ACL blocks the
// bench's token, so its callbacks say not_allowed); their completed
// requests are called back ones, as chargeauth's (columns relay/bare,
// inline/bare, authz/bare, /relay). The table also gives chargeauth's WAL
// fsyncs (its /metrics) and callback p99.
//
//	go run ./bench -workload merit
//	go run ./bench -workload merit -relay
//	go run ./bench -workload merit -burst 200000 -duration 20s
//	go build -o /tmp/a ./cmd/chargeauth; git stash; go build -o /tmp/b ./cmd/chargeauth; git stash pop
//	go run ./bench -workload merit -chargeauth-bin /tmp/a -chargeauth-bin-b /tmp/b
//
// The generator shares the machine (and the process) with the service, so
// on a small machine both compete for the same cores: compare the ratios,
// not the absolute figures, between machines. TestBenchSmoke runs both
// workloads with a tiny load as a functional check; run it under pprof with
//
//	go test -run TestBenchSmoke -cpuprofile cpu.out ./bench
package main
