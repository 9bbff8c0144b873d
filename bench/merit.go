package main

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// The figures of merit (-workload merit): chargeauth, the bare ceiling and
// the durable ceiling, each served by its own process, under the same two
// loads in one run: open loop at a fixed rate, then a closed-loop burst.
// The CPU of each server is its process's utime+stime read from
// /proc/<pid>/stat before and after, per completed request: for the
// ceilings a 202, for chargeauth a 202 whose callback arrived (the
// decision and the delivered callback are part of the work). The load
// generator and the callback sink are this process, never counted.

// Environment of a ceiling server child (this binary, or the test binary
// through TestMain): which ceiling, and the durable one's data directory.
const (
	envServe    = "CHARGEAUTH_BENCH_SERVE"
	envServeDir = "CHARGEAUTH_BENCH_DIR"
)

// serveChildFromEnv serves a ceiling and returns true if this process was
// started as one (envServe set); false at once otherwise. The child listens
// on 127.0.0.1:0, prints "listening <addr>" on stdout and serves until its
// stdin closes (the parent's end of the pipe: a parent that dies takes its
// servers with it) or SIGTERM.
func serveChildFromEnv() bool {
	kind := os.Getenv(envServe)
	if kind == "" {
		return false
	}
	if err := serveChild(kind, os.Getenv(envServeDir)); err != nil {
		fmt.Fprintln(os.Stderr, "bench ceiling:", err)
		os.Exit(2)
	}
	return true
}

func serveChild(kind, dir string) error {
	var db *pebble.DB
	var relay func(id string, req session.Request)
	switch kind {
	case "bare":
	case "durable", "relay", "relay-inline", "relay-authz":
		var err error
		if db, err = pebble.Open(dir, &pebble.Options{Logger: quietPebble{}}); err != nil {
			return err
		}
		defer db.Close()
		switch kind {
		case "relay":
			relay = newRelayer().relay
		case "relay-inline":
			relay = newRelayer().post
		case "relay-authz":
			r, stop, err := newAuthzRelayer()
			if err != nil {
				return err
			}
			defer stop()
			relay = r.authorizeAndPost
		}
	default:
		return fmt.Errorf("%s=%q: bare, durable, relay, relay-inline or relay-authz", envServe, kind)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var ids atomic.Uint64
	srv := &fasthttp.Server{
		Handler:            func(ctx *fasthttp.RequestCtx) { relayHandle(ctx, &ids, db, relay) },
		Name:               kind,
		MaxRequestBodySize: 16 << 10,
		ReadTimeout:        10 * time.Second,
		WriteTimeout:       10 * time.Second,
		IdleTimeout:        2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Printf("listening %s\n", ln.Addr())
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
	case <-sig:
	case err := <-serveErr:
		return err
	}
	return srv.Shutdown()
}

// MeritConfig configures the figures of merit.
type MeritConfig struct {
	// Rate and Duration are the open loop's (requests due at Rate a second
	// for Duration); Concurrency its workers and the burst's connections.
	Rate        float64
	Duration    time.Duration
	Concurrency int
	// Burst is the closed-loop burst's request count.
	Burst   int64
	Timeout time.Duration
	// Binary is the chargeauth binary; "" builds ./cmd/chargeauth into a
	// temporary directory. BinaryB, if set, is measured too, right after
	// Binary under each load, as server "chargeauth-b": an A/B in one run.
	Binary  string
	BinaryB string
	// TempDir is the parent of the data directories (the disk measured).
	TempDir string
	// DrainTimeout bounds the wait for chargeauth's callbacks after each
	// load.
	DrainTimeout time.Duration
	// Servers are the servers measured, in order (default bare, durable,
	// relay if Relay, chargeauth).
	Servers []string
	// Relay adds the relay ceilings: the durable one that also POSTs each
	// request's callback ("allowed"), the least chargeauth's contract asks
	// of a server without an authorization service; "relay" POSTs from a
	// goroutine after the 202, "relay-inline" from the handler before it
	// (no hand-off: the CPU floor); "relay-authz" is relay-inline that
	// first asks chargeauth's authorization service, served in the relay's
	// own process on loopback, through chargeauth's batching client: the
	// contract's four HTTP endpoints, no hand-off.
	Relay bool
	// ExtraArgs are added to chargeauth's serve command line; ExtraArgsB
	// to chargeauth-b's (after ExtraArgs), which is then measured even
	// without BinaryB (with Binary): an A/B of settings.
	ExtraArgs  []string
	ExtraArgsB []string
	// EnvB is added to chargeauth-b's environment (NAME=value), which is
	// then measured even without BinaryB: an A/B of, say, GOMAXPROCS.
	EnvB []string
	// Progress, if set, gets a line per phase.
	Progress io.Writer
}

// MeritPhase is one server under one load.
type MeritPhase struct {
	Server string `json:"server"`
	Load   string `json:"load"`
	Report
	// Completed counts the requests done: 202s, and for chargeauth 202s
	// called back.
	Completed int64 `json:"completed"`
	// CPUSeconds is the server process's utime+stime from the load's start
	// to the last completion; CPUPerCompletedUS the same per completed
	// request, in microseconds.
	CPUSeconds        float64 `json:"server_cpu_s"`
	CPUPerCompletedUS float64 `json:"server_cpu_us_per_completed"`
	// WALSyncs is chargeauth's WAL fsyncs over the phase (its /metrics).
	WALSyncs float64 `json:"server_wal_fsyncs,omitempty"`
	// PeakRSSBytes is the server process's VmHWM.
	PeakRSSBytes uint64 `json:"server_peak_rss_bytes"`
	// LoadAvg is the machine's 1-minute load average as the phase began.
	LoadAvg string `json:"loadavg_at_start"`
	PID     int    `json:"pid"`
}

// MeritSummary is the run.
type MeritSummary struct {
	StartedAt  time.Time     `json:"started_at"`
	Rate       float64       `json:"rate"`
	Duration   string        `json:"duration"`
	Burst      int64         `json:"burst"`
	Conc       int           `json:"concurrency"`
	ExtraArgs  []string      `json:"chargeauth_extra_args,omitempty"`
	ExtraArgsB []string      `json:"chargeauth_b_extra_args,omitempty"`
	EnvB       []string      `json:"chargeauth_b_env,omitempty"`
	Binary     string        `json:"binary,omitempty"`
	BinaryB    string        `json:"binary_b,omitempty"`
	Phases     []*MeritPhase `json:"phases"`
}

// Phase returns the phase of server under load ("open" or "burst"), or nil.
func (s *MeritSummary) Phase(server, load string) *MeritPhase {
	for _, p := range s.Phases {
		if p.Server == server && p.Load == load {
			return p
		}
	}
	return nil
}

// Run measures each server under the open loop, then each under the burst.
func (cfg MeritConfig) Run() (*MeritSummary, error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Burst <= 0 || cfg.Concurrency < 1 {
		return nil, errors.New("merit: rate, duration, burst and concurrency must be positive")
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = []string{"bare", "durable", "chargeauth"}
		if cfg.Relay {
			cfg.Servers = []string{"bare", "durable", "relay", "relay-inline", "relay-authz", "chargeauth"}
		}
		if cfg.BinaryB != "" || len(cfg.ExtraArgsB) > 0 || len(cfg.EnvB) > 0 {
			cfg.Servers = append(cfg.Servers, "chargeauth-b")
		}
	}
	bin, cleanup, err := buildChargeauth(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("merit: %w", err)
	}
	defer cleanup()
	cfg.Binary = bin
	s := &MeritSummary{StartedAt: time.Now().UTC(), Rate: cfg.Rate, Duration: cfg.Duration.String(),
		Burst: cfg.Burst, Conc: cfg.Concurrency, ExtraArgs: cfg.ExtraArgs, ExtraArgsB: cfg.ExtraArgsB, EnvB: cfg.EnvB,
		Binary: cfg.Binary, BinaryB: cfg.BinaryB}
	loads := []struct {
		name string
		load LoadConfig
	}{
		{"open", LoadConfig{Concurrency: cfg.Concurrency, Duration: cfg.Duration, Rate: cfg.Rate, Timeout: cfg.Timeout}},
		{"burst", LoadConfig{Concurrency: cfg.Concurrency, Requests: cfg.Burst, Timeout: cfg.Timeout}},
	}
	for _, l := range loads {
		for _, server := range cfg.Servers {
			p, err := cfg.phase(server, l.name, l.load)
			if err != nil {
				return nil, fmt.Errorf("merit: %s, %s: %w", server, l.name, err)
			}
			s.Phases = append(s.Phases, p)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "%-10s %-5s 202s %d completed %d, %.0f/s, ack p99 %.2f ms, server CPU %.1f us per completed (load %s)\n",
					server, l.name, p.Accepted, p.Completed, p.AcceptedPerSec, p.Ack.P99, p.CPUPerCompletedUS, p.LoadAvg)
			}
		}
	}
	return s, nil
}

// server is a server process being measured.
type server struct {
	cmd   *exec.Cmd
	addr  string
	admin string // chargeauth's admin listener ("" for a ceiling)
	stdin io.Closer
	dir   string
	done  chan error
}

// startServer starts kind: "bare" and "durable" as this binary's children
// (envServe), "chargeauth" as the binary's serve, its embedded
// authorization service allowing benchToken.
func (cfg MeritConfig) startServer(kind string) (_ *server, err error) {
	dir, err := os.MkdirTemp(cfg.TempDir, "chargeauth-bench-"+kind+"-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	srv := &server{dir: dir, done: make(chan error, 1)}
	if !strings.HasPrefix(kind, "chargeauth") {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		srv.cmd = exec.Command(self)
		srv.cmd.Env = append(os.Environ(), envServe+"="+kind, envServeDir+"="+filepath.Join(dir, "db"))
		srv.cmd.Stderr = os.Stderr
		stdout, err := srv.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		in, err := srv.cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		srv.stdin = in
		if err := srv.cmd.Start(); err != nil {
			return nil, err
		}
		go func() { srv.done <- srv.cmd.Wait() }()
		line, err := bufio.NewReader(stdout).ReadString('\n')
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
		if err != nil || !ok {
			srv.stop()
			return nil, fmt.Errorf("%s did not say where it listens: %q %v", kind, line, err)
		}
		srv.addr = addr
		return srv, nil
	}

	aclPath := filepath.Join(dir, "acl.json")
	if err := os.WriteFile(aclPath, benchACL, 0o600); err != nil {
		return nil, err
	}
	bin, extra, env := cfg.Binary, cfg.ExtraArgs, []string(nil)
	if kind == "chargeauth-b" {
		bin = cmp.Or(cfg.BinaryB, cfg.Binary)
		extra = append(slices.Clone(cfg.ExtraArgs), cfg.ExtraArgsB...)
		env = cfg.EnvB
	}
	for attempt := 1; ; attempt++ {
		ports, err := reserveAddrs(3)
		if err != nil {
			return nil, err
		}
		args := append([]string{"serve", "--listen", ports[0], "--admin-listen", ports[1], "--authz-listen", ports[2],
			"--data-dir", filepath.Join(dir, "data"), "--acl", aclPath, "--allow-private-callbacks",
			"--drain-delay", "0s", "--log-level", "warn"}, extra...)
		if srv, err = startProcess(bin, args, env, dir); err != nil {
			return nil, err
		}
		srv.addr, srv.admin = ports[0], ports[1]
		err = srv.waitReady("http://"+ports[1]+"/readyz", "")
		if err == nil {
			return srv, nil
		}
		// Exit code 2: nothing started, here because another process took
		// a reserved port before serve listened on it. Other ports, then.
		var exit *exec.ExitError
		if attempt < 3 && errors.As(err, &exit) && exit.ExitCode() == 2 {
			continue
		}
		_ = srv.stop()
		return nil, err
	}
}

// stop ends the server (SIGTERM, then SIGKILL after 30s) and removes its
// directory.
func (s *server) stop() error {
	defer os.RemoveAll(s.dir)
	if s.stdin != nil {
		s.stdin.Close()
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("did not stop within 30s of SIGTERM")
	}
}

// phase runs one server under one load.
func (cfg MeritConfig) phase(kind, loadName string, load LoadConfig) (*MeritPhase, error) {
	srv, err := cfg.startServer(kind)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = srv.stop()
		}
	}()
	pid := srv.cmd.Process.Pid
	p := &MeritPhase{Server: kind, Load: loadName, LoadAvg: loadAvg(), PID: pid}

	var tr *tracker
	body := requestBody("http://127.0.0.1:9/callback")
	if strings.HasPrefix(kind, "chargeauth") || strings.HasPrefix(kind, "relay") {
		tr = newTracker()
		sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		sink := &fasthttp.Server{Handler: tr.callback, Name: "bench-sink", IdleTimeout: time.Minute}
		go sink.Serve(sinkLn) //nolint:errcheck // ends at Shutdown
		defer sink.Shutdown() //nolint:errcheck
		body = requestBody("http://" + sinkLn.Addr().String() + "/callback")
	}
	cpu0, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	var syncs0 float64
	metrics := &fasthttp.Client{}
	if srv.admin != "" {
		if syncs0, err = walFsyncs(metrics, srv.admin); err != nil {
			return nil, err
		}
	}
	var res loadResult
	if tr != nil {
		tr.tl = newTimeline(time.Now())
		res = runLoad(load, srv.addr, body, tr.acked, tr.tl)
	} else {
		res = runLoad(load, srv.addr, body, nil, nil)
	}
	p.Report = *newReport(kind, res)
	p.Completed = res.Accepted
	if tr != nil {
		drainStart := time.Now()
		timedOut := !tr.waitAll(res.Accepted, cfg.DrainTimeout)
		p.Callbacks = tr.report(res.Accepted, time.Since(drainStart), timedOut)
		p.Completed = p.Callbacks.Distinct
		p.Timeline = tr.tl.points(true)
	}
	cpu1, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	if srv.admin != "" {
		syncs1, err := walFsyncs(metrics, srv.admin)
		if err != nil {
			return nil, err
		}
		p.WALSyncs = syncs1 - syncs0
	}
	p.CPUSeconds = (cpu1 - cpu0).Seconds()
	p.CPUPerCompletedUS = p.CPUSeconds * 1e6 / float64(max(p.Completed, 1))
	p.PeakRSSBytes, _ = procStatusOf(pid, "VmHWM:")
	stopped = true
	if err := srv.stop(); err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	return p, nil
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTick = 100

// procCPU is process pid's user plus system CPU time (all its threads),
// from /proc/<pid>/stat, to the clock tick (10ms).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields counted from after its closing parenthesis, field 3 first.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}

// procStatusOf reads one "kB" field of /proc/<pid>/status, in bytes.
func procStatusOf(pid int, field string) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	return statusField(b, field)
}

// loadAvg is the machine's load averages (1, 5, 15 minutes).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// WriteTable prints the figures, one column per server, then chargeauth's
// ratios to the bare and the durable ceiling (and chargeauth-b's, and B's to
// A, in an A/B run).
func (s *MeritSummary) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "figures of merit: %s; open loop %.0f/s for %s, then a closed-loop burst of %d at %d connections; each server its own process\n",
		s.StartedAt.Format(time.RFC3339), s.Rate, s.Duration, s.Burst, s.Conc)
	if len(s.ExtraArgs) > 0 {
		fmt.Fprintf(w, "chargeauth extra arguments: %s\n", strings.Join(s.ExtraArgs, " "))
	}
	if s.BinaryB != "" || len(s.ExtraArgsB) > 0 || len(s.EnvB) > 0 {
		fmt.Fprintf(w, "A/B: chargeauth = %s, chargeauth-b = %s %s %s\n", s.Binary, strings.Join(s.EnvB, " "), cmp.Or(s.BinaryB, s.Binary), strings.Join(s.ExtraArgsB, " "))
	}
	fmt.Fprintln(w)
	servers := []string{"bare", "durable", "chargeauth"}
	type ratioCol struct{ name, num, den string }
	ratios := []ratioCol{{"/bare", "chargeauth", "bare"}, {"/durable", "chargeauth", "durable"}}
	if s.Phase("relay", "open") != nil || s.Phase("relay", "burst") != nil {
		servers = []string{"bare", "durable", "relay", "relay-inline", "relay-authz", "chargeauth"}
		ratios = append([]ratioCol{{"relay/bare", "relay", "bare"}, {"inline/bare", "relay-inline", "bare"},
			{"authz/bare", "relay-authz", "bare"}},
			append(ratios, ratioCol{"/relay", "chargeauth", "relay"})...)
	}
	if s.Phase("chargeauth-b", "open") != nil || s.Phase("chargeauth-b", "burst") != nil {
		servers = append(servers, "chargeauth-b")
		ratios = append(ratios, ratioCol{"b/bare", "chargeauth-b", "bare"}, ratioCol{"b/durable", "chargeauth-b", "durable"},
			ratioCol{"b/a", "chargeauth-b", "chargeauth"})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := append([]string{""}, servers...)
	for _, r := range ratios {
		head = append(head, r.name)
	}
	fmt.Fprintf(tw, "%s\t\n", strings.Join(head, "\t"))
	for _, load := range []string{"open", "burst"} {
		row := func(name string, f func(*MeritPhase) float64, format string, withRatios bool) {
			cells := []string{load + ": " + name}
			for _, srv := range servers {
				if p := s.Phase(srv, load); p != nil && !math.IsNaN(f(p)) {
					cells = append(cells, fmt.Sprintf(format, f(p)))
				} else {
					cells = append(cells, "-")
				}
			}
			for _, r := range ratios {
				num, den := s.Phase(r.num, load), s.Phase(r.den, load)
				if !withRatios || num == nil || den == nil || f(den) <= 0 {
					cells = append(cells, "")
					continue
				}
				cells = append(cells, fmt.Sprintf("%.2f", f(num)/f(den)))
			}
			fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
		}
		row("202s", func(p *MeritPhase) float64 { return float64(p.Accepted) }, "%.0f", false)
		row("completed", func(p *MeritPhase) float64 { return float64(p.Completed) }, "%.0f", false)
		row("errors", func(p *MeritPhase) float64 { return float64(p.ErrorTotal) }, "%.0f", false)
		row("accepts/s", func(p *MeritPhase) float64 { return p.AcceptedPerSec }, "%.0f", true)
		row("ack p50 ms", func(p *MeritPhase) float64 { return p.Ack.P50 }, "%.3f", true)
		row("ack p99 ms", func(p *MeritPhase) float64 { return p.Ack.P99 }, "%.3f", true)
		row("ack max ms", func(p *MeritPhase) float64 { return p.Ack.Max }, "%.3f", false)
		row("callback p99 ms", func(p *MeritPhase) float64 {
			if p.Callbacks == nil {
				return math.NaN() // a ceiling calls nobody back
			}
			return p.Callbacks.E2E.P99
		}, "%.1f", false)
		row("CPU us/completed", func(p *MeritPhase) float64 { return p.CPUPerCompletedUS }, "%.1f", true)
		row("WAL fsyncs/completed", func(p *MeritPhase) float64 {
			if !strings.HasPrefix(p.Server, "chargeauth") {
				return math.NaN() // not counted: a ceiling has no /metrics
			}
			return p.WALSyncs / float64(max(p.Completed, 1))
		}, "%.3f", false)
		row("peak RSS MiB", func(p *MeritPhase) float64 { return float64(p.PeakRSSBytes) / (1 << 20) }, "%.1f", false)
		row("lost", func(p *MeritPhase) float64 {
			if p.Callbacks == nil {
				return 0
			}
			return float64(p.Callbacks.Lost)
		}, "%.0f", false)
		// unknown: decided by the deadline (--decision-timeout, from the
		// accept), not by the authorization service: a burst absorbed
		// faster than the pipeline decides waits on disk past it.
		row("decided unknown", func(p *MeritPhase) float64 {
			if p.Callbacks == nil {
				return 0
			}
			return float64(p.Callbacks.Statuses["unknown"])
		}, "%.0f", false)
		row("drain after load s", func(p *MeritPhase) float64 {
			if p.Callbacks == nil {
				return 0
			}
			return p.Callbacks.DrainSeconds
		}, "%.2f", false)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(w, "\nload average (1, 5, 15 min) at each phase's start:\n")
	for _, p := range s.Phases {
		fmt.Fprintf(w, "  %s/%s: %s\n", p.Server, p.Load, p.LoadAvg)
	}
	return nil
}

// lost is chargeauth's 202s without a callback, over both loads.
func (s *MeritSummary) lost() int64 {
	var n int64
	for _, p := range s.Phases {
		if p.Callbacks != nil {
			n += p.Callbacks.Lost
		}
	}
	return n
}
