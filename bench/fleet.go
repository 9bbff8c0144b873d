package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
)

// The fleet workload (-workload fleet): 1 node, then 3, each node its own
// `chargeauth serve` process (own data directory on the measured disk,
// --node-id, --peers naming the others), sharing one authorization service
// (`chargeauth authz`, a process of its own) and behind Debian's HAProxy
// (a process too: round robin, health checks on /readyz, retries on
// connection failures only). Under each fleet, in one run:
//
//   - idle: nothing for a few seconds, the nodes' CPU per node per second;
//   - open: Rate requests a second for Duration through HAProxy;
//   - burst: a closed loop of Burst requests through HAProxy;
//   - get: Gets GETs of the open loop's ids straight to the owning node,
//     and (3 nodes) as many to a node that does not own them, which
//     forwards them (one hop).
//
// The CPU of each process is its utime+stime from /proc/<pid>/stat before
// and after each phase: the nodes' summed, HAProxy's and the
// authorization service's apart. A completed request is a 202 whose
// callback reached the bench's sink. Both fleets get the same loads (the
// same rate, duration, burst and GETs), so their CPU per request compares.

// FleetConfig configures the fleet workload.
type FleetConfig struct {
	Rate        float64
	Duration    time.Duration
	Concurrency int
	Burst       int64
	// Gets is the number of GETs of each kind (owner, forwarded).
	Gets    int
	Timeout time.Duration
	// Idle is how long the idle phase lasts (0: none).
	Idle time.Duration
	// Sizes are the fleets measured, in order (default 1 and 3 nodes).
	Sizes []int
	// Binary is the chargeauth binary ("": built from ./cmd/chargeauth).
	// BinaryB, if set, makes a variant b of every fleet with it (nodes
	// and authorization service), with ExtraArgsB and EnvB if set: an A/B
	// of binaries in one run.
	Binary  string
	BinaryB string
	// ExtraArgs are added to every node's serve command line; ExtraArgsB,
	// if set, makes a second variant ("b") of every fleet size, measured
	// right after the first: an A/B of settings in one run.
	ExtraArgs  []string
	ExtraArgsB []string
	// EnvB, if set, is added to variant b's nodes' environment (NAME=value):
	// an A/B of, say, GOMAXPROCS.
	EnvB []string
	// HAProxy is the haproxy binary. Default: "haproxy" on PATH, or
	// /usr/sbin/haproxy.
	HAProxy      string
	TempDir      string
	DrainTimeout time.Duration
	Progress     io.Writer
}

// FleetPhase is one fleet under one load.
type FleetPhase struct {
	Nodes   int    `json:"nodes"`
	Variant string `json:"variant"`
	Load    string `json:"load"`
	Report
	// Completed counts 202s called back (GETs answered 200, for the GET
	// loads).
	Completed int64 `json:"completed"`
	// CallbacksPerSec is Completed over the time from the load's start to
	// the last callback.
	CallbacksPerSec float64 `json:"callbacks_per_s"`
	// CPU seconds over the phase: the nodes' summed, HAProxy's, the
	// authorization service's.
	NodesCPU   float64 `json:"nodes_cpu_s"`
	HAProxyCPU float64 `json:"haproxy_cpu_s"`
	AuthzCPU   float64 `json:"authz_cpu_s"`
	// WALSyncs counts the nodes' WAL fsyncs over the phase (their
	// chargeauth_pebble_wal_fsync_seconds_count); CtxSwitches their
	// context switches (voluntary and not, from /proc).
	WALSyncs    float64 `json:"nodes_wal_fsyncs"`
	CtxSwitches float64 `json:"nodes_ctx_switches"`
	Seconds     float64 `json:"seconds"`
	LoadAvg     string  `json:"loadavg_at_start"`
}

// NodesCPUPerUS is the nodes' CPU per completed request, in microseconds.
func (p *FleetPhase) NodesCPUPerUS() float64 { return p.NodesCPU * 1e6 / float64(max(p.Completed, 1)) }

// FleetSummary is the run.
type FleetSummary struct {
	StartedAt  time.Time     `json:"started_at"`
	Rate       float64       `json:"rate"`
	Duration   string        `json:"duration"`
	Burst      int64         `json:"burst"`
	Gets       int           `json:"gets"`
	Conc       int           `json:"concurrency"`
	ExtraArgs  []string      `json:"extra_args,omitempty"`
	ExtraArgsB []string      `json:"extra_args_b,omitempty"`
	EnvB       []string      `json:"env_b,omitempty"`
	BinaryB    string        `json:"binary_b,omitempty"`
	Phases     []*FleetPhase `json:"phases"`
}

// Phase returns the phase of the fleet of n nodes, variant, under load, or nil.
func (s *FleetSummary) Phase(n int, variant, load string) *FleetPhase {
	for _, p := range s.Phases {
		if p.Nodes == n && p.Variant == variant && p.Load == load {
			return p
		}
	}
	return nil
}

// Run measures every fleet size (and variant) under every load.
func (cfg FleetConfig) Run() (_ *FleetSummary, err error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Burst <= 0 || cfg.Concurrency < 1 || cfg.Gets < 0 {
		return nil, errors.New("fleet: rate, duration, burst and concurrency must be positive")
	}
	if cfg.DrainTimeout <= 0 || cfg.DrainTimeout > maxDrain {
		cfg.DrainTimeout = maxDrain
	}
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = []int{1, 3}
	}
	if cfg.HAProxy == "" {
		if cfg.HAProxy, err = exec.LookPath("haproxy"); err != nil {
			cfg.HAProxy = "/usr/sbin/haproxy"
		}
	}
	bin, cleanup, err := buildChargeauth(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	defer cleanup()
	cfg.Binary = bin
	s := &FleetSummary{StartedAt: time.Now().UTC(), Rate: cfg.Rate, Duration: cfg.Duration.String(), Burst: cfg.Burst,
		Gets: cfg.Gets, Conc: cfg.Concurrency, ExtraArgs: cfg.ExtraArgs, ExtraArgsB: cfg.ExtraArgsB, EnvB: cfg.EnvB,
		BinaryB: cfg.BinaryB}
	type variant struct {
		args, env []string
	}
	variants := map[string]variant{"a": {args: cfg.ExtraArgs}}
	order := []string{"a"}
	if len(cfg.ExtraArgsB) > 0 || len(cfg.EnvB) > 0 || cfg.BinaryB != "" {
		variants["b"] = variant{append(append([]string(nil), cfg.ExtraArgs...), cfg.ExtraArgsB...), cfg.EnvB}
		order = append(order, "b")
	}
	for _, v := range order { // a variant's fleets one after the other: their ratio is the figure
		for _, n := range cfg.Sizes {
			c := cfg
			if v == "b" && cfg.BinaryB != "" {
				c.Binary = cfg.BinaryB
			}
			phases, err := c.runFleet(n, v, variants[v].args, variants[v].env)
			if err != nil {
				return nil, fmt.Errorf("fleet-%d%s: %w", n, v, err)
			}
			s.Phases = append(s.Phases, phases...)
		}
	}
	return s, nil
}

// fleet is the processes of one fleet.
type fleet struct {
	authz   *server
	nodes   []*server
	publics []string
	admins  []string
	haproxy *server
	front   string
}

func (f *fleet) stop() error {
	var errs []error
	if f.haproxy != nil {
		_ = f.haproxy.cmd.Process.Kill() // nothing of HAProxy's to keep
		<-f.haproxy.done
		os.RemoveAll(f.haproxy.dir)
	}
	for _, n := range f.nodes {
		errs = append(errs, n.stop())
	}
	if f.authz != nil {
		errs = append(errs, f.authz.stop())
	}
	return errors.Join(errs...)
}

// cpu is the processes' CPU so far: the nodes' summed, HAProxy's, authz's.
func (f *fleet) cpu() (nodes, hp, az time.Duration, err error) {
	var errs []error
	for _, n := range f.nodes {
		c, err := procCPU(n.cmd.Process.Pid)
		nodes += c
		errs = append(errs, err)
	}
	hp, err1 := procCPU(f.haproxy.cmd.Process.Pid)
	az, err2 := procCPU(f.authz.cmd.Process.Pid)
	return nodes, hp, az, errors.Join(append(errs, err1, err2)...)
}

// walFsyncs is the WAL fsyncs a chargeauth process has made
// (chargeauth_pebble_wal_fsync_seconds_count on its admin listener's
// /metrics).
func walFsyncs(client *fasthttp.Client, admin string) (float64, error) {
	code, body, err := client.Get(nil, "http://"+admin+"/metrics")
	if err != nil || code != fasthttp.StatusOK {
		return 0, fmt.Errorf("%s/metrics: %d %v", admin, code, err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "chargeauth_pebble_wal_fsync_seconds_count "); ok {
			x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s/metrics: %q", admin, line)
			}
			return x, nil
		}
	}
	return 0, fmt.Errorf("%s/metrics: no chargeauth_pebble_wal_fsync_seconds_count", admin)
}

// counters are the nodes' WAL fsyncs (from their /metrics) and context
// switches (from /proc/<pid>/status), summed.
func (f *fleet) counters() (syncs, switches float64, err error) {
	client := &fasthttp.Client{}
	for i, n := range f.nodes {
		x, err := walFsyncs(client, f.admins[i])
		if err != nil {
			return 0, 0, err
		}
		syncs += x
		// Each thread's, from its own status: the process's holds its
		// main thread's only.
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", n.cmd.Process.Pid))
		if err != nil || len(tasks) == 0 {
			return 0, 0, fmt.Errorf("threads of %d: %v", n.cmd.Process.Pid, err)
		}
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue // a thread that ended
			}
			for line := range strings.Lines(string(b)) {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
					if err != nil {
						return 0, 0, fmt.Errorf("%s: %q", t, line)
					}
					switches += x
				}
			}
		}
	}
	return syncs, switches, nil
}

// startRetrying is start, again on other ports (up to three times in
// all) when a chargeauth process exited with code 2 before it was ready:
// nothing started, here because another process took a reserved port
// before it listened.
func (cfg FleetConfig) startRetrying(n int, extra, env []string) (*fleet, error) {
	for attempt := 1; ; attempt++ {
		f, err := cfg.start(n, extra, env)
		var exit *exec.ExitError
		if err != nil && attempt < 3 && errors.As(err, &exit) && exit.ExitCode() == 2 {
			continue
		}
		return f, err
	}
}

// start starts the authorization service, n nodes and HAProxy, and waits
// until HAProxy sees every node up.
func (cfg FleetConfig) start(n int, extra, env []string) (_ *fleet, err error) {
	f := &fleet{}
	defer func() {
		if err != nil {
			_ = f.stop()
		}
	}()
	dir, err := os.MkdirTemp(cfg.TempDir, "chargeauth-fleet-authz-")
	if err != nil {
		return nil, err
	}
	aclPath := filepath.Join(dir, "acl.json")
	if err := os.WriteFile(aclPath, benchACL, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addrs, err := reserveAddrs(2*n + 2) // authz, HAProxy, then each node's public and admin
	if err != nil {
		return nil, err
	}
	authzAddr, front := addrs[0], addrs[1]
	if f.authz, err = startProcess(cfg.Binary, []string{"authz", "--listen", authzAddr, "--acl", aclPath,
		"--acl-reload-interval", "0", "--log-level", "warn"}, nil, dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := f.authz.waitReady("", authzAddr); err != nil {
		return nil, err
	}
	var peers []string
	for i := range n {
		f.publics = append(f.publics, addrs[2+2*i])
		peers = append(peers, fmt.Sprintf("node-%d=http://%s", i, addrs[2+2*i]))
	}
	var servers strings.Builder
	for i := range n {
		public, admin := addrs[2+2*i], addrs[3+2*i]
		dir, err := os.MkdirTemp(cfg.TempDir, "chargeauth-fleet-node-")
		if err != nil {
			return nil, err
		}
		args := append([]string{"serve", "--listen", public, "--admin-listen", admin,
			"--authz-url", "http://" + authzAddr, "--data-dir", filepath.Join(dir, "data"),
			"--node-id", fmt.Sprintf("node-%d", i), "--peers", strings.Join(peers, ","),
			"--allow-private-callbacks", "--drain-delay", "0s", "--log-level", "warn"}, extra...)
		node, err := startProcess(cfg.Binary, args, env, dir)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		f.nodes = append(f.nodes, node)
		f.admins = append(f.admins, admin)
		if err := node.waitReady("http://"+admin+"/readyz", ""); err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(admin)
		fmt.Fprintf(&servers, "    server node-%d %s check port %s inter 1s rise 1\n", i, public, port)
	}

	hcfg := fmt.Sprintf(`global
    maxconn 8192
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 2
    retry-on conn-failure
    option redispatch 1
    option http-keep-alive
frontend fe
    bind %s
    stats enable
    stats uri %s
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /readyz
%s`, front, fleetStatsPath, servers.String())
	cfgDir, err := os.MkdirTemp("", "chargeauth-haproxy-")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(cfgDir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(hcfg), 0o644); err != nil {
		os.RemoveAll(cfgDir)
		return nil, err
	}
	if f.haproxy, err = startProcess(cfg.HAProxy, []string{"-db", "-q", "-f", cfgPath}, nil, cfgDir); err != nil {
		os.RemoveAll(cfgDir)
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	f.front = front
	if err := f.haproxy.waitReady("", front); err != nil {
		return nil, err
	}
	// The load starts once HAProxy's health checks have every node up
	// (its CSV statistics, served by the frontend at fleetStatsPath).
	client := &fasthttp.Client{}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		up := 0
		if code, body, err := client.Get(nil, "http://"+front+fleetStatsPath+";csv"); err == nil && code == fasthttp.StatusOK {
			for line := range strings.Lines(string(body)) {
				if strings.HasPrefix(line, "nodes,node-") && strings.Contains(line, ",UP,") {
					up++
				}
			}
		}
		if up == n {
			return f, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("HAProxy has %d of %d nodes up after 30s", up, n)
		}
	}
}

// fleetStatsPath is where the bench's HAProxy serves its statistics.
const fleetStatsPath = "/haproxy-stats"

// runFleet starts a fleet of n nodes and measures it under every load.
func (cfg FleetConfig) runFleet(n int, variant string, extra, env []string) (_ []*FleetPhase, err error) {
	f, err := cfg.startRetrying(n, extra, env)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := f.stop(); err == nil && serr != nil {
			err = fmt.Errorf("stop: %w", serr)
		}
	}()
	var phases []*FleetPhase
	measure := func(load string, run func(p *FleetPhase) error) error {
		p := &FleetPhase{Nodes: n, Variant: variant, Load: load, LoadAvg: loadAvg()}
		s0, c0, err := f.counters()
		if err != nil {
			return err
		}
		n0, h0, a0, err := f.cpu()
		if err != nil {
			return err
		}
		start := time.Now()
		if err := run(p); err != nil {
			return fmt.Errorf("%s: %w", load, err)
		}
		p.Seconds = time.Since(start).Seconds()
		n1, h1, a1, err := f.cpu()
		if err != nil {
			return err
		}
		s1, c1, err := f.counters()
		if err != nil {
			return err
		}
		p.NodesCPU, p.HAProxyCPU, p.AuthzCPU = (n1 - n0).Seconds(), (h1 - h0).Seconds(), (a1 - a0).Seconds()
		p.WALSyncs, p.CtxSwitches = s1-s0, c1-c0
		phases = append(phases, p)
		if cfg.Progress != nil && load == "idle" {
			fmt.Fprintf(cfg.Progress, "fleet-%d%s %-9s nodes' CPU %.1f ms/s per node (load %s)\n", n, variant, load,
				p.NodesCPU*1e3/p.Seconds/float64(n), p.LoadAvg)
		} else if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "fleet-%d%s %-9s completed %d, %.0f/s, ack p99 %.2f ms, nodes' CPU %.1f us per completed, HAProxy %.1f, authz %.1f (load %s)\n",
				n, variant, load, p.Completed, p.AcceptedPerSec, p.Ack.P99, p.NodesCPUPerUS(),
				p.HAProxyCPU*1e6/float64(max(p.Completed, 1)), p.AuthzCPU*1e6/float64(max(p.Completed, 1)), p.LoadAvg)
		}
		return nil
	}
	if cfg.Idle > 0 {
		if err := measure("idle", func(p *FleetPhase) error { time.Sleep(cfg.Idle); return nil }); err != nil {
			return nil, err
		}
	}
	var ids []string
	post := func(load LoadConfig, keep int) func(p *FleetPhase) error {
		return func(p *FleetPhase) error {
			tr := newTracker()
			sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			sink := &fasthttp.Server{Handler: tr.callback, Name: "bench-sink", IdleTimeout: time.Minute}
			go sink.Serve(sinkLn) //nolint:errcheck // ends at Shutdown
			defer sink.Shutdown() //nolint:errcheck
			var mu sync.Mutex
			acked := func(body []byte, at time.Time) {
				tr.acked(body, at)
				mu.Lock()
				if len(ids) < keep {
					ids = append(ids, string(jsonString(body, "request_id")))
				}
				mu.Unlock()
			}
			tr.tl = newTimeline(time.Now())
			res := runLoad(load, f.front, requestBody("http://"+sinkLn.Addr().String()+"/callback"), acked, tr.tl)
			drainStart := time.Now()
			timedOut := !tr.waitAll(res.Accepted, cfg.DrainTimeout)
			p.Report = *newReport(fmt.Sprintf("fleet-%d", n), res)
			p.Callbacks = tr.report(res.Accepted, time.Since(drainStart), timedOut)
			p.Completed = p.Callbacks.Distinct
			p.CallbacksPerSec = float64(p.Completed) / (res.Elapsed + time.Since(drainStart)).Seconds()
			if p.Callbacks.Lost != 0 {
				return fmt.Errorf("%w: %d of %d", errLost, p.Callbacks.Lost, res.Accepted)
			}
			return nil
		}
	}
	if err := measure("open", post(LoadConfig{Concurrency: cfg.Concurrency, Duration: cfg.Duration, Rate: cfg.Rate, Timeout: cfg.Timeout}, cfg.Gets)); err != nil {
		return nil, err
	}
	if err := measure("burst", post(LoadConfig{Concurrency: cfg.Concurrency, Requests: cfg.Burst, Timeout: cfg.Timeout}, 0)); err != nil {
		return nil, err
	}
	if cfg.Gets > 0 {
		kinds := []string{"get-owner"}
		if n > 1 {
			kinds = append(kinds, "get-forwarded")
		}
		for _, kind := range kinds {
			hop := 0
			if kind == "get-forwarded" {
				hop = 1
			}
			if err := measure(kind, func(p *FleetPhase) error { return f.gets(p, ids, hop, cfg.Concurrency, cfg.Timeout) }); err != nil {
				return nil, err
			}
		}
	}
	return phases, nil
}

// gets GETs every id from the node hop places after its owner (0: the
// owner itself), straight (not through HAProxy), closed loop with conc
// workers; p gets the 200s and their latencies.
func (f *fleet) gets(p *FleetPhase, ids []string, hop, conc int, timeout time.Duration) error {
	clients := make([]*fasthttp.HostClient, len(f.publics))
	for i, a := range f.publics {
		clients[i] = &fasthttp.HostClient{Addr: a, MaxConns: conc, ReadTimeout: timeout, WriteTimeout: timeout}
	}
	h := newHistogram()
	work := make(chan string)
	var mu sync.Mutex
	errs := map[string]int64{}
	var ok int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for id := range work {
				owner, _ := actors.NodeOf(id)
				i := (int(owner) + hop) % len(clients)
				req.SetRequestURI("http://" + f.publics[i] + sessionPath + id)
				t0 := time.Now()
				err := clients[i].DoTimeout(req, resp, timeout)
				lat := time.Since(t0)
				mu.Lock()
				switch {
				case err != nil:
					errs["transport"]++
				case resp.StatusCode() != fasthttp.StatusOK:
					errs[fmt.Sprintf("http_%d", resp.StatusCode())]++
				case hop != 0 && string(resp.Header.Peek("X-Chargeauth-Node")) != fmt.Sprintf("node-%d", owner):
					errs["not_forwarded"]++
				default:
					ok++
					h.Record(lat)
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	p.Report = Report{Workload: p.Load, Sent: int64(len(ids)), Accepted: ok, Errors: errs,
		ElapsedSeconds: time.Since(start).Seconds(), Ack: h.Summary()}
	p.AcceptedPerSec = float64(ok) / max(p.ElapsedSeconds, 1e-9)
	p.Completed = ok
	if len(errs) > 0 {
		return fmt.Errorf("GETs failed: %v", errs)
	}
	return nil
}

// WriteTable prints every phase, one column per fleet, then the ratios of
// 3 nodes to 1 (per variant).
func (s *FleetSummary) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "fleet: %s; open loop %.0f/s for %s, closed-loop burst of %d, %d GETs of each kind, %d connections; every node, HAProxy and authz its own process\n",
		s.StartedAt.Format(time.RFC3339), s.Rate, s.Duration, s.Burst, s.Gets, s.Conc)
	if len(s.ExtraArgs) > 0 {
		fmt.Fprintf(w, "nodes' extra arguments: %s\n", strings.Join(s.ExtraArgs, " "))
	}
	if len(s.ExtraArgsB) > 0 || len(s.EnvB) > 0 || s.BinaryB != "" {
		fmt.Fprintf(w, "variant b: %s %s %s\n", strings.Join(s.EnvB, " "), cmp.Or(s.BinaryB, "the same binary"), strings.Join(s.ExtraArgsB, " "))
	}
	type col struct {
		n int
		v string
	}
	var cols []col
	for _, p := range s.Phases {
		c := col{p.Nodes, p.Variant}
		if len(cols) == 0 || cols[len(cols)-1] != c {
			cols = append(cols, c)
		}
	}
	var variants []string
	for _, c := range cols {
		if c.n == 1 && s.Phase(3, c.v, "open") != nil {
			variants = append(variants, c.v)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{""}
	for _, c := range cols {
		head = append(head, fmt.Sprintf("%d node(s) %s", c.n, c.v))
	}
	for _, v := range variants {
		head = append(head, "3/1 "+v)
	}
	fmt.Fprintf(tw, "%s\t\n", strings.Join(head, "\t"))
	row := func(load, name string, f func(*FleetPhase) float64, format string, ratio bool) {
		cells := []string{load + ": " + name}
		any := false
		for _, c := range cols {
			if p := s.Phase(c.n, c.v, load); p != nil {
				cells = append(cells, fmt.Sprintf(format, f(p)))
				any = true
			} else {
				cells = append(cells, "-")
			}
		}
		if !any {
			return
		}
		for _, v := range variants {
			one, three := s.Phase(1, v, load), s.Phase(3, v, load)
			if !ratio || one == nil || three == nil || f(one) <= 0 {
				cells = append(cells, "")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.2f", f(three)/f(one)))
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
	}
	per := func(cpu func(*FleetPhase) float64) func(*FleetPhase) float64 {
		return func(p *FleetPhase) float64 { return cpu(p) * 1e6 / float64(max(p.Completed, 1)) }
	}
	row("idle", "nodes' CPU ms/s per node", func(p *FleetPhase) float64 { return p.NodesCPU * 1e3 / p.Seconds / float64(p.Nodes) }, "%.1f", true)
	row("idle", "ctx switches/s per node", func(p *FleetPhase) float64 { return p.CtxSwitches / p.Seconds / float64(p.Nodes) }, "%.0f", true)
	for _, load := range []string{"open", "burst"} {
		row(load, "completed", func(p *FleetPhase) float64 { return float64(p.Completed) }, "%.0f", false)
		row(load, "accepts/s", func(p *FleetPhase) float64 { return p.AcceptedPerSec }, "%.0f", true)
		row(load, "callbacks/s", func(p *FleetPhase) float64 { return p.CallbacksPerSec }, "%.0f", true)
		row(load, "ack p50 ms", func(p *FleetPhase) float64 { return p.Ack.P50 }, "%.2f", true)
		row(load, "ack p99 ms", func(p *FleetPhase) float64 { return p.Ack.P99 }, "%.2f", true)
		row(load, "callback p99 ms", func(p *FleetPhase) float64 { return p.Callbacks.E2E.P99 }, "%.2f", true)
		row(load, "nodes' CPU us/completed", per(func(p *FleetPhase) float64 { return p.NodesCPU }), "%.1f", true)
		row(load, "HAProxy CPU us/completed", per(func(p *FleetPhase) float64 { return p.HAProxyCPU }), "%.1f", true)
		row(load, "authz CPU us/completed", per(func(p *FleetPhase) float64 { return p.AuthzCPU }), "%.1f", true)
		row(load, "nodes' WAL fsyncs/completed", func(p *FleetPhase) float64 { return p.WALSyncs / float64(max(p.Completed, 1)) }, "%.3f", true)
		row(load, "nodes' ctx switches/completed", func(p *FleetPhase) float64 { return p.CtxSwitches / float64(max(p.Completed, 1)) }, "%.2f", true)
	}
	for _, load := range []string{"get-owner", "get-forwarded"} {
		row(load, "GETs/s", func(p *FleetPhase) float64 { return p.AcceptedPerSec }, "%.0f", false)
		row(load, "p50 ms", func(p *FleetPhase) float64 { return p.Ack.P50 }, "%.3f", false)
		row(load, "p99 ms", func(p *FleetPhase) float64 { return p.Ack.P99 }, "%.3f", false)
		row(load, "nodes' CPU us/GET", per(func(p *FleetPhase) float64 { return p.NodesCPU }), "%.1f", false)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "(nodes' CPU is summed over the node processes; a forwarded GET costs the node that forwards and the owner)")
	fmt.Fprint(w, "load average (1, 5, 15 min) at each phase's start:\n")
	for _, p := range s.Phases {
		fmt.Fprintf(w, "  fleet-%d%s/%s: %s\n", p.Nodes, p.Variant, p.Load, p.LoadAvg)
	}
	return nil
}

// runFleet runs the fleet workload, prints its table to w and writes its
// JSON report.
func runFleet(o options, w io.Writer) error {
	cfg := FleetConfig{Rate: o.load.Rate, Duration: o.load.Duration, Concurrency: o.load.Concurrency, Burst: o.burst,
		Gets: o.gets, Timeout: o.load.Timeout, Idle: o.idle, Binary: o.binary, BinaryB: o.binaryB, TempDir: o.tempDir, DrainTimeout: o.drainTimeout,
		ExtraArgs: strings.Fields(o.extraArgs), ExtraArgsB: strings.Fields(o.extraArgsB), EnvB: strings.Fields(o.envB), Progress: w}
	for _, f := range strings.Split(o.fleetNodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 9 {
			return fmt.Errorf("-fleet-nodes %q: node counts from 1 to 9, comma-separated", o.fleetNodes)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	s, err := cfg.Run()
	if err != nil {
		return err
	}
	return printReport(w, s, o.out)
}
