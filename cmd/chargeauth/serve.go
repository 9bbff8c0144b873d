package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/api"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/http/webhook"
)

type serveFlags struct {
	listen, adminListen, dataDir        string
	authzURL, authzListen, aclPath      string
	aclReloadInterval                   time.Duration
	decisionTimeout                     time.Duration
	authzConcurrency                    int
	callbackSecret                      string
	callbackMaxAttempts                 int
	callbackBackoff, callbackMaxBackoff time.Duration
	callbackTimeout, callbackMaxAge     time.Duration
	allowPrivateCallbacks               bool
	callbackAllowCIDR, callbackCAFile   string
	callbackHostConcurrency             int
	maxInflight, maxBacklog             int
	shutdownGrace, retention            time.Duration
	minFreeDisk                         byteSize
	logLevel, logFormat                 string
	nodeID, peers, peerAdminURLs        string
	drainDelay                          time.Duration
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":8080", "public API address")
	fs.StringVar(&f.adminListen, "admin-listen", "127.0.0.1:8082", "admin listener address (health, readiness, metrics, sessions)")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "directory of the Pebble store")
	fs.StringVar(&f.authzURL, "authz-url", "", "base URL of an external authorization service (empty: start the embedded one)")
	fs.StringVar(&f.authzListen, "authz-listen", "127.0.0.1:8081", "address of the embedded authorization service")
	fs.StringVar(&f.aclPath, "acl", "", "ACL file of the embedded authorization service (empty: a small built-in sample)")
	fs.DurationVar(&f.aclReloadInterval, "acl-reload-interval", time.Second, "how often the --acl file is checked for changes (0: only on SIGHUP)")
	fs.DurationVar(&f.decisionTimeout, "decision-timeout", 10*time.Second, "time from accept to the deadline, after which the decision is unknown")
	fs.IntVar(&f.authzConcurrency, "authz-concurrency", 64, "most calls to the authorization service at once")
	fs.StringVar(&f.callbackSecret, "callback-secret", "", "whsec_<base64> secret(s), space-separated, that sign callbacks (empty: unsigned)")
	fs.IntVar(&f.callbackMaxAttempts, "callback-max-attempts", 10, "callback attempts in all, the first included")
	fs.DurationVar(&f.callbackBackoff, "callback-backoff", time.Second, "delay before the first callback retry (doubling, jittered)")
	fs.DurationVar(&f.callbackMaxBackoff, "callback-max-backoff", 10*time.Minute, "longest delay between callback attempts")
	fs.DurationVar(&f.callbackTimeout, "callback-timeout", 10*time.Second, "timeout of one callback attempt")
	fs.DurationVar(&f.callbackMaxAge, "callback-max-age", 24*time.Hour, "no callback retry later than this after the decision")
	fs.BoolVar(&f.allowPrivateCallbacks, "allow-private-callbacks", false, "allow callbacks to loopback, private and link-local addresses")
	fs.StringVar(&f.callbackAllowCIDR, "callback-allow-cidr", "", "address ranges (CIDR, space- or comma-separated) callbacks may reach even if private")
	fs.IntVar(&f.callbackHostConcurrency, "callback-host-concurrency", 64, "most callbacks in flight to one receiver host")
	fs.StringVar(&f.callbackCAFile, "callback-ca-file", "", "PEM file of extra root certificates for HTTPS callbacks")
	fs.IntVar(&f.maxInflight, "max-inflight", 10000, "most live request actors; the rest wait in the store")
	fs.IntVar(&f.maxBacklog, "max-backlog", 0, "most requests waiting in the store before accepts get 503 (0: bounded by disk only)")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 10*time.Second, "time in-flight work gets to finish on SIGTERM/SIGINT")
	fs.DurationVar(&f.retention, "retention", 168*time.Hour, "how long delivered and failed records are kept")
	f.minFreeDisk = 256 << 20
	fs.Var(&f.minFreeDisk, "min-free-disk", "free space under which accepts get 503")
	fs.StringVar(&f.nodeID, "node-id", "", "this node's id in a fleet; its trailing number is carried by every request id (empty: the hostname)")
	fs.StringVar(&f.peers, "peers", "", "the fleet's nodes, this one included, as id=public-base-URL,... (empty: a single node)")
	fs.StringVar(&f.peerAdminURLs, "peer-admin-urls", "", "admin base URLs of peers, id=URL,... (default: each peer's host with this node's admin port)")
	fs.DurationVar(&f.drainDelay, "drain-delay", 5*time.Second, "on SIGTERM/SIGINT, time /readyz answers 503 while the node still serves, before it stops")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or text")
}

// check rejects values the service would otherwise take as "use the default".
func (f *serveFlags) check() error {
	ranges := []struct {
		name  string
		value any
		ok    bool
		want  string
	}{
		{"decision-timeout", f.decisionTimeout, f.decisionTimeout >= time.Millisecond, "at least 1ms"},
		{"authz-concurrency", f.authzConcurrency, f.authzConcurrency >= 1, "at least 1"},
		{"callback-max-attempts", f.callbackMaxAttempts, f.callbackMaxAttempts >= 1, "at least 1"},
		{"callback-backoff", f.callbackBackoff, f.callbackBackoff > 0, "positive"},
		{"callback-max-backoff", f.callbackMaxBackoff, f.callbackMaxBackoff >= f.callbackBackoff, "at least --callback-backoff"},
		{"callback-timeout", f.callbackTimeout, f.callbackTimeout >= time.Millisecond, "at least 1ms"},
		{"callback-max-age", f.callbackMaxAge, f.callbackMaxAge >= time.Millisecond, "at least 1ms"},
		{"max-inflight", f.maxInflight, f.maxInflight >= 1, "at least 1"},
		{"callback-host-concurrency", f.callbackHostConcurrency, f.callbackHostConcurrency >= 1, "at least 1"},
		{"max-backlog", f.maxBacklog, f.maxBacklog >= 0, "0 or more"},
		{"shutdown-grace", f.shutdownGrace, f.shutdownGrace >= 0, "0 or more"},
		{"retention", f.retention, f.retention > 0, "positive"},
		{"acl-reload-interval", f.aclReloadInterval, f.aclReloadInterval >= 0, "0 or more"},
		{"drain-delay", f.drainDelay, f.drainDelay >= 0, "0 or more"},
	}
	var errs []error
	for _, r := range ranges {
		if !r.ok {
			errs = append(errs, fmt.Errorf("--%s %v: must be %s", r.name, r.value, r.want))
		}
	}
	for _, s := range strings.Fields(f.callbackSecret) {
		if _, err := webhook.ParseSecret(s); err != nil {
			errs = append(errs, fmt.Errorf("--callback-secret: %v", err))
		}
	}
	if f.authzURL != "" {
		if err := (&authz.ClientConfig{URL: f.authzURL}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--authz-url %q: %v", f.authzURL, err))
		}
		if f.aclPath != "" {
			errs = append(errs, errors.New("--acl configures the embedded authorization service: it cannot be used with --authz-url"))
		}
	}
	if _, err := parseCIDRs(f.callbackAllowCIDR); err != nil {
		errs = append(errs, err)
	}
	if f.callbackCAFile != "" {
		if _, err := os.Stat(f.callbackCAFile); err != nil {
			errs = append(errs, fmt.Errorf("--callback-ca-file: %v", err))
		}
	}
	if f.dataDir == "" {
		errs = append(errs, errors.New("--data-dir: must not be empty"))
	}
	if _, err := newLogger(io.Discard, f.logLevel, f.logFormat); err != nil {
		errs = append(errs, err)
	}
	if _, err := f.fleet(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	if err := parseFlags(fs, args, stderr, "chargeauth serve [flags]"); err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return &wrappedUsage{err}
	}
	cidrs, _ := parseCIDRs(f.callbackAllowCIDR) // checked above
	log, _ := newLogger(stderr, f.logLevel, f.logFormat)
	slog.SetDefault(log)
	procs := api.ScaleGOMAXPROCS()
	log.Debug("runtime", "gomaxprocs", procs, "cpus", runtime.NumCPU())

	authzURL := f.authzURL
	if authzURL == "" {
		a := acl.Sample()
		if f.aclPath != "" {
			var err error
			if a, err = acl.Load(f.aclPath); err != nil {
				return usageError("--acl: %v", err)
			}
		}
		ln, err := net.Listen("tcp", f.authzListen)
		if err != nil {
			return usageError("--authz-listen: %v", err)
		}
		srv := authz.NewServer(authz.Config{ACL: a, Logger: log.With("component", "authz")})
		go func() {
			if err := srv.Serve(ln); err != nil {
				log.Error("authorization service stopped", "err", err)
			}
		}()
		defer srv.Shutdown()
		if f.aclPath != "" {
			defer reloadACL(srv, f.aclPath, f.aclReloadInterval)()
		}
		authzURL = "http://" + ln.Addr().String()
	}
	if f.aclPath == "" {
		signal.Ignore(syscall.SIGHUP) // nothing to reload; do not die of it
	}

	// Before the service starts: a signal during its start (resume may
	// take a while) then stops it once it is up, with exit 0.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	peers, _ := f.fleet() // checked above
	svc, err := api.New(api.Config{
		NodeID:                  f.nodeID,
		Peers:                   peers,
		Listen:                  f.listen,
		AdminListen:             f.adminListen,
		DataDir:                 f.dataDir,
		AuthzURL:                authzURL,
		DecisionTimeout:         f.decisionTimeout,
		AuthzConcurrency:        f.authzConcurrency,
		CallbackSecrets:         strings.Fields(f.callbackSecret),
		CallbackMaxAttempts:     f.callbackMaxAttempts,
		CallbackBackoff:         f.callbackBackoff,
		CallbackMaxBackoff:      f.callbackMaxBackoff,
		CallbackTimeout:         f.callbackTimeout,
		CallbackMaxAge:          f.callbackMaxAge,
		AllowPrivateCallbacks:   f.allowPrivateCallbacks,
		CallbackAllowCIDRs:      cidrs,
		CallbackCAFile:          f.callbackCAFile,
		CallbackHostConcurrency: f.callbackHostConcurrency,
		MaxInflight:             f.maxInflight,
		MaxBacklog:              f.maxBacklog,
		ShutdownGrace:           f.shutdownGrace,
		Retention:               f.retention,
		MinFreeDisk:             uint64(f.minFreeDisk),
		Logger:                  log,
	})
	if errors.Is(err, api.ErrListen) {
		return usageError("%v", err)
	}
	if err != nil {
		return err
	}
	select {
	case <-sigs:
		drain(svc, log, f.drainDelay, sigs)
		log.Info("stopping", "grace", f.shutdownGrace.String())
	case err := <-svc.Err():
		log.Error("listener failed", "err", err)
		_ = svc.Close()
		return err
	}
	return svc.Close()
}

// drain turns /readyz 503 and keeps serving for delay, so that a load
// balancer's health check takes the node out before it stops taking
// requests. A second signal ends the drain at once.
func drain(svc *api.Service, log *slog.Logger, delay time.Duration, sigs <-chan os.Signal) {
	svc.Drain()
	if delay <= 0 {
		return
	}
	log.Info("draining: /readyz answers 503, requests are still served", "drain_delay", delay.String())
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-sigs:
		log.Info("second signal: the drain ends now")
	}
}

// fleet reads --node-id (the hostname when empty), --peers and
// --peer-admin-urls, and checks them as the service will.
func (f *serveFlags) fleet() ([]api.Peer, error) {
	if f.nodeID == "" {
		h, err := os.Hostname()
		if err != nil && f.peers != "" {
			return nil, fmt.Errorf("--node-id: empty and no hostname: %v", err)
		}
		f.nodeID = h
	}
	peers, err := api.ParsePeers(f.peers, f.peerAdminURLs)
	if err != nil {
		return nil, err
	}
	if err := api.CheckFleet(f.nodeID, peers); err != nil {
		return nil, err
	}
	return peers, nil
}

// newLogger builds the JSON (or text) slog logger.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be json or text", format)
}

// parseCIDRs reads space- or comma-separated CIDR ranges.
func parseCIDRs(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("--callback-allow-cidr %q: not a CIDR range (e.g. 10.1.0.0/16)", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
