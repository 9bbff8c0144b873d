package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/node"
)

// FleetConfig configures the fleet workload: Nodes chargeauth services
// (in this process, each with its own store on real disk, peers of each
// other) behind Debian's HAProxy (a subprocess, round robin, health checks
// on /readyz, retries on connection failures only), with the in-process
// authorization service and callback sink of the chargeauth workload. The
// load goes through HAProxy, so one node and three compare on the same
// path.
type FleetConfig struct {
	Load  LoadConfig
	Nodes int
	// HAProxy is the haproxy binary. Default: "haproxy" on PATH, or
	// /usr/sbin/haproxy.
	HAProxy      string
	TempDir      string
	DrainTimeout time.Duration
	Logger       *slog.Logger
}

// Run starts everything, applies the load through HAProxy, waits for the
// callbacks, stops everything and returns the report ("fleet-<n>").
func (cfg FleetConfig) Run() (_ *Report, err error) {
	if err := cfg.Load.Validate(); err != nil {
		return nil, err
	}
	if cfg.Nodes < 1 {
		return nil, errors.New("fleet: at least one node")
	}
	if cfg.DrainTimeout <= 0 || cfg.DrainTimeout > maxDrain {
		cfg.DrainTimeout = maxDrain
	}
	if cfg.HAProxy == "" {
		if cfg.HAProxy, err = exec.LookPath("haproxy"); err != nil {
			cfg.HAProxy = "/usr/sbin/haproxy"
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reserve := func() (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	}

	list, err := acl.Parse(benchACL)
	if err != nil {
		return nil, err
	}
	authzLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	authzSrv := authz.NewServer(authz.Config{ACL: list, Logger: log})
	go authzSrv.Serve(authzLn) //nolint:errcheck // returns nil after Shutdown
	defer authzSrv.Shutdown()  //nolint:errcheck
	tr := newTracker()
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sink := &fasthttp.Server{Handler: tr.callback, Name: "bench-sink", IdleTimeout: time.Minute}
	go sink.Serve(sinkLn) //nolint:errcheck // ends at Shutdown
	defer sink.Shutdown() //nolint:errcheck

	type benchNode struct{ id, public, admin, dir string }
	nodes := make([]benchNode, cfg.Nodes)
	var peers []string
	for i := range nodes {
		n := &nodes[i]
		n.id = fmt.Sprintf("node-%d", i)
		if n.public, err = reserve(); err != nil {
			return nil, err
		}
		if n.admin, err = reserve(); err != nil {
			return nil, err
		}
		if n.dir, err = os.MkdirTemp(cfg.TempDir, "chargeauth-fleet-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(n.dir)
		peers = append(peers, n.id+"=http://"+n.public)
	}
	for _, n := range nodes {
		svc, err := node.Start(node.Config{Listen: n.public, AdminListen: n.admin, DataDir: n.dir,
			AuthzURL: "http://" + authzLn.Addr().String(), AllowPrivateCallbacks: true,
			ShutdownGrace: 5 * time.Second, Logger: log, NodeID: n.id, Peers: strings.Join(peers, ",")}.WithDefaults())
		if err != nil {
			return nil, fmt.Errorf("fleet: start %s: %w", n.id, err)
		}
		defer svc.Close()
	}

	front, err := reserve()
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for _, n := range nodes {
		_, port, _ := net.SplitHostPort(n.admin)
		fmt.Fprintf(&servers, "    server %s %s check port %s inter 1s\n", n.id, n.public, port)
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
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /readyz
%s`, front, servers.String())
	cfgDir, err := os.MkdirTemp("", "chargeauth-haproxy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(cfgDir)
	cfgPath := filepath.Join(cfgDir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(hcfg), 0o644); err != nil {
		return nil, err
	}
	hp := exec.Command(cfg.HAProxy, "-db", "-q", "-f", cfgPath)
	hp.Stderr = os.Stderr
	if err := hp.Start(); err != nil {
		return nil, fmt.Errorf("fleet: haproxy: %w", err)
	}
	defer func() { _ = hp.Process.Kill(); _ = hp.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", front)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("fleet: haproxy does not listen on %s", front)
		}
	}

	body := requestBody("http://" + sinkLn.Addr().String() + "/callback")
	mem := startMemSampler()
	tr.tl = newTimeline(time.Now())
	res := runLoad(cfg.Load, front, body, tr.acked, tr.tl)
	drainStart := time.Now()
	timedOut := !tr.waitAll(res.Accepted, cfg.DrainTimeout)
	drained := time.Since(drainStart)
	m := mem.Stop()
	r := newReport(fmt.Sprintf("fleet-%d", cfg.Nodes), res)
	r.Memory = &m
	r.Callbacks = tr.report(res.Accepted, drained, timedOut)
	r.Timeline = tr.tl.points(true)
	return r, nil
}

// runFleet runs the fleet workload with one node and with three, and
// prints one line each and their ratio.
func runFleet(o options, w io.Writer) error {
	var reports []*Report
	for _, n := range []int{1, 3} {
		r, err := FleetConfig{Load: o.load, Nodes: n, TempDir: o.tempDir, DrainTimeout: o.drainTimeout}.Run()
		if err != nil {
			return err
		}
		reports = append(reports, r)
	}
	fmt.Fprintf(w, "%-8s %10s %10s %12s %12s %10s %8s %14s\n", "workload", "202s", "202s/s", "ack p99 ms", "e2e p99 ms", "callbacks", "lost", "CPU us per 202")
	for _, r := range reports {
		cb := r.Callbacks
		fmt.Fprintf(w, "%-8s %10d %10.0f %12.2f %12.2f %10d %8d %14.1f\n", r.Workload, r.Accepted, r.AcceptedPerSec,
			r.Ack.P99, cb.E2E.P99, cb.Distinct, cb.Lost, r.Memory.CPUSeconds*1e6/float64(max(r.Accepted, 1)))
	}
	one, three := reports[0], reports[1]
	fmt.Fprintf(w, "3 nodes / 1 node: 202s/s %.2f, ack p99 %.2f, CPU per 202 %.2f (chargeauth's process; HAProxy not counted)\n",
		three.AcceptedPerSec/max(one.AcceptedPerSec, 1), three.Ack.P99/max(one.Ack.P99, 1e-9),
		(three.Memory.CPUSeconds/float64(max(three.Accepted, 1)))/max(one.Memory.CPUSeconds/float64(max(one.Accepted, 1)), 1e-12))
	for _, r := range reports {
		if r.Callbacks.Lost != 0 {
			return fmt.Errorf("%w: %s: %d of %d", errLost, r.Workload, r.Callbacks.Lost, r.Accepted)
		}
	}
	return nil
}
