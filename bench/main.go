package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/chargeauth/chargeauth/node"
)

// options are the command line.
type options struct {
	load         LoadConfig
	out          string
	tempDir      string
	drainTimeout time.Duration
	authzConc    int
	authzDelay   time.Duration
	verbose      bool
	cpuProfile   string

	workload        string
	burst           int64
	decisionTimeout time.Duration
	maxInflight     int
	heapProfile     string
	fakeDelay       time.Duration
	fakeProbe       time.Duration // 0: 3s (tests shorten it)

	binary, binaryB string
	relay           bool
	extraArgs       string
	extraArgsB      string
	envB            string

	gets       int
	idle       time.Duration
	fleetNodes string
}

func main() {
	// As serve does, and for both workloads, so that they compare.
	node.ScaleGOMAXPROCS()
	if serveChildFromEnv() { // a ceiling server of -workload merit
		return
	}
	var o options
	flag.IntVar(&o.load.Concurrency, "concurrency", 64, "workers (and connections) of the load generator")
	flag.DurationVar(&o.load.Duration, "duration", 10*time.Second, "how long each workload's load lasts (0: bounded by -requests only)")
	flag.Int64Var(&o.load.Requests, "requests", 0, "requests per workload (0: bounded by -duration only); whichever limit comes first stops the load")
	flag.Float64Var(&o.load.Rate, "rate", 0, "open loop: requests per second (0: closed loop)")
	flag.DurationVar(&o.load.Timeout, "timeout", 10*time.Second, "timeout of one request")
	flag.StringVar(&o.out, "out", "bench/out/report.json", "JSON report file (its directory is created); the chart goes beside it, with .png for its extension")
	flag.StringVar(&o.tempDir, "tmp", "", "parent of chargeauth's fresh data directory, on the disk to measure (default: the system temp dir)")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", maxDrain, "longest wait for callbacks after the load (at most 60s)")
	flag.IntVar(&o.authzConc, "authz-concurrency", 0, "chargeauth's --authz-concurrency (0: its default)")
	flag.DurationVar(&o.authzDelay, "authz-delay", 0, "compare: the authorization service answers after this long (the service being protected is the bottleneck; accepts run ahead on disk)")
	flag.BoolVar(&o.verbose, "v", false, "show the service's logs on stderr")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the chargeauth workload to this file")
	flag.StringVar(&o.workload, "workload", "compare", "compare: the ceiling and chargeauth under the same load; burst: -burst requests at once, then the drain (burst.go); fleet: 1 and 3 nodes behind HAProxy, each node its own process (fleet.go); merit: the figures of merit, each server its own process (merit.go)")
	flag.Int64Var(&o.burst, "burst", 100000, "burst: requests in the burst")
	flag.DurationVar(&o.decisionTimeout, "decision-timeout", defaultBurstDecisionTimeout, "burst: chargeauth's decision timeout (long, so that nothing times out)")
	flag.IntVar(&o.maxInflight, "max-inflight", 0, "burst: chargeauth's --max-inflight (0: its default)")
	flag.StringVar(&o.heapProfile, "heapprofile", "", "burst: write a heap profile near the heap's peak to this file")
	flag.DurationVar(&o.fakeDelay, "fake-delay", time.Millisecond, "burst: how long the fake authorization service sleeps before it answers")
	flag.StringVar(&o.binary, "chargeauth-bin", "", "merit, fleet: the chargeauth binary to measure (default: go build ./cmd/chargeauth)")
	flag.StringVar(&o.binaryB, "chargeauth-bin-b", "", "merit: a second chargeauth binary, measured after the first under each load (an A/B in one run); fleet: a variant b of every fleet with it")
	flag.StringVar(&o.extraArgs, "chargeauth-args", "", "merit, fleet: extra arguments to chargeauth serve (fleet: every node), space-separated")
	flag.StringVar(&o.extraArgsB, "chargeauth-args-b", "", "merit: extra arguments to chargeauth-b's serve (measures chargeauth-b, with -chargeauth-bin unless -chargeauth-bin-b); fleet: a variant b of every fleet with them: an A/B of settings")
	flag.StringVar(&o.envB, "chargeauth-env-b", "", "merit: NAME=value ... added to chargeauth-b's environment (measures chargeauth-b); fleet: to variant b's nodes': an A/B of, say, GOMAXPROCS")
	flag.BoolVar(&o.relay, "relay", false, "merit: also measure the relay ceiling: the durable one that POSTs each request's callback (allowed) too")
	flag.IntVar(&o.gets, "gets", 3000, "fleet: GETs of each kind (straight to the owner; through a node that forwards to the owner)")
	flag.DurationVar(&o.idle, "idle", 3*time.Second, "fleet: how long each fleet's nodes are measured idle before the load (0: not)")
	flag.StringVar(&o.fleetNodes, "fleet-nodes", "1,3", "fleet: the fleets measured, by node count, in order")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	switch o.workload {
	case "compare":
		err = run(o, os.Stdout)
	case "fleet":
		if !set["rate"] {
			o.load.Rate = defaultFleetRate
		}
		if !set["burst"] {
			o.burst = defaultFleetBurst
		}
		if !set["out"] {
			o.out = "bench/out/fleet.json"
		}
		err = runFleet(o, os.Stdout)
	case "merit":
		if !set["rate"] {
			o.load.Rate = defaultMeritRate
		}
		if !set["burst"] {
			o.burst = defaultMeritBurst
		}
		if !set["out"] {
			o.out = "bench/out/merit.json"
		}
		if !set["drain-timeout"] {
			o.drainTimeout = defaultBurstDrain
		}
		err = runMerit(o, os.Stdout)
	case "burst":
		if !set["drain-timeout"] {
			o.drainTimeout = defaultBurstDrain
		}
		if !set["out"] {
			o.out = fmt.Sprintf("bench/out/burst-%d.json", o.burst)
		}
		if set["duration"] || set["requests"] || set["rate"] {
			fmt.Fprintln(os.Stderr, "bench: -duration, -requests and -rate do not apply to -workload burst (use -burst)")
			os.Exit(2)
		}
		err = runBurst(o, os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "bench: -workload %q: compare, burst, fleet or merit\n", o.workload)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if errors.Is(err, errLost) {
			os.Exit(1)
		}
		os.Exit(2)
	}
}

// run runs both workloads, prints the table to w and writes the JSON report.
// It returns errLost (after writing both) if a 202 got no callback.
func run(o options, w io.Writer) error {
	if err := o.load.Validate(); err != nil {
		return err
	}
	if o.drainTimeout <= 0 || o.drainTimeout > maxDrain {
		return fmt.Errorf("drain-timeout %s: must be in (0, %s]", o.drainTimeout, maxDrain)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	started := time.Now()

	ceiling, err := CeilingConfig{Load: o.load}.Run()
	if err != nil {
		return err
	}
	debug.FreeOSMemory() // so the next run's RSS does not start from the ceiling's
	durable, err := CeilingConfig{Load: o.load, Durable: true, TempDir: o.tempDir}.Run()
	if err != nil {
		return err
	}
	debug.FreeOSMemory()

	cc := ChargeauthConfig{Load: o.load, TempDir: o.tempDir, DrainTimeout: o.drainTimeout,
		AuthzConcurrency: o.authzConc, AuthzDelay: o.authzDelay, Logger: logger}
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	chargeauth, err := cc.Run()
	stopProfile()
	if err != nil {
		return err
	}

	s := newSummary(started, o.load, cc, ceiling, durable, chargeauth)
	if err := s.WriteTable(w); err != nil {
		return err
	}
	if o.out != "" {
		if err := s.WriteJSON(o.out); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		fmt.Fprintf(w, "report written to %s\n", o.out)
		png := chartPath(o.out)
		if err := writeChart(png, s.chartTitle(), s.chartWorkloads()); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		fmt.Fprintf(w, "chart written to %s\n", png)
	}
	if cb := chargeauth.Callbacks; cb != nil && cb.Lost != 0 {
		return fmt.Errorf("%w: %d of %d", errLost, cb.Lost, chargeauth.Accepted)
	}
	return nil
}

// startCPUProfile starts a CPU profile to path, if path is set, and returns
// the function that stops it.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// runBurst runs the burst workload, prints its table to w and writes its
// JSON report. It returns errLost (after writing both) if a 202 got no
// callback.
func runBurst(o options, w io.Writer) error {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cfg := BurstConfig{
		Requests: o.burst, Concurrency: o.load.Concurrency, Timeout: o.load.Timeout,
		TempDir: o.tempDir, DrainTimeout: o.drainTimeout, DecisionTimeout: o.decisionTimeout,
		AuthzConcurrency: o.authzConc, MaxInflight: o.maxInflight,
		FakeDelay: o.fakeDelay, FakeProbe: o.fakeProbe, HeapProfile: o.heapProfile, Progress: w, Logger: logger,
	}
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	r, err := cfg.Run()
	stopProfile()
	if err != nil {
		return err
	}
	if err := r.WriteTable(w); err != nil {
		return err
	}
	if o.out != "" {
		if err := writeJSON(o.out, r); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		fmt.Fprintf(w, "report written to %s\n", o.out)
		png := chartPath(o.out)
		ws := []chartWorkload{{Name: "chargeauth", Timeline: r.Timeline, LoadEndS: r.LoadSeconds, Color: chargeauthColor}}
		if err := writeChart(png, r.chartTitle(), ws); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		fmt.Fprintf(w, "chart written to %s\n", png)
	}
	if c := r.Callbacks; c.Lost != 0 || r.Drain.TimedOut {
		return fmt.Errorf("%w: %d of %d (drain timed out: %v)", errLost, c.Lost, r.Accepted, r.Drain.TimedOut)
	}
	return nil
}

// Defaults of -workload merit: the open-loop rate, and a burst
// small enough for a quick run (the figure is -burst 200000).
const (
	defaultMeritRate  = 3000
	defaultMeritBurst = 20000
	defaultFleetRate  = 1500
	defaultFleetBurst = 20000
)

// runMerit runs the figures of merit, prints the table to w and writes the
// JSON report. It returns errLost (after writing both) if a 202 got no
// callback.
func runMerit(o options, w io.Writer) error {
	cfg := MeritConfig{Rate: o.load.Rate, Duration: o.load.Duration, Concurrency: o.load.Concurrency,
		Burst: o.burst, Timeout: o.load.Timeout, Binary: o.binary, BinaryB: o.binaryB, Relay: o.relay,
		TempDir: o.tempDir, DrainTimeout: o.drainTimeout, ExtraArgs: strings.Fields(o.extraArgs), ExtraArgsB: strings.Fields(o.extraArgsB), EnvB: strings.Fields(o.envB), Progress: w}
	s, err := cfg.Run()
	if err != nil {
		return err
	}
	if err := printReport(w, s, o.out); err != nil {
		return err
	}
	if n := s.lost(); n != 0 {
		return fmt.Errorf("%w: %d", errLost, n)
	}
	return nil
}

// printReport prints s's table to w after a blank line and writes s as
// JSON to out, if set.
func printReport(w io.Writer, s interface{ WriteTable(io.Writer) error }, out string) error {
	fmt.Fprintln(w)
	if err := s.WriteTable(w); err != nil {
		return err
	}
	if out != "" {
		if err := writeJSON(out, s); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		fmt.Fprintf(w, "report written to %s\n", out)
	}
	return nil
}
