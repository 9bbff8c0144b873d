package main

import (
	"context"
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
	"github.com/chargeauth/chargeauth/schedule"
)

type serveFlags struct {
	listen, adminListen, dataDir      string
	authzURL, authzListen, aclPath    string
	aclReloadInterval                 time.Duration
	decisionTimeout                   time.Duration
	authzConcurrency                  int
	callbackSecret                    string
	callbackSchedule                  scheduleFlag
	callbackMaxAttempts               int
	callbackTimeout, callbackMaxAge   time.Duration
	allowPrivateCallbacks             bool
	callbackAllowCIDR, callbackCAFile string
	callbackHostConcurrency           int
	maxInflight, maxBacklog           int
	shutdownGrace, retention          time.Duration
	minFreeDisk                       byteSize
	logLevel, logFormat               string
	adminTokenFile                    string
	nodeID, peers, peerAdminURLs      string
	drainDelay                        time.Duration
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
	f.callbackSchedule = scheduleFlag{schedule.Default}
	fs.Var(&f.callbackSchedule, "callback-schedule", "delays between callback attempts, comma-separated, the first (0s) before the first attempt; each jittered by up to 20%")
	fs.IntVar(&f.callbackMaxAttempts, "callback-max-attempts", 0, "callback attempts in all, the first included (0: one per --callback-schedule entry; more: its last delay repeats)")
	fs.DurationVar(&f.callbackTimeout, "callback-timeout", 10*time.Second, "timeout of one callback attempt")
	fs.DurationVar(&f.callbackMaxAge, "callback-max-age", 72*time.Hour, "no callback attempt later than this after the decision; then the request is failed")
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
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the admin API's bearer token (or set CHARGEAUTH_ADMIN_TOKEN); required when --admin-listen is not loopback")
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
		{"callback-max-attempts", f.callbackMaxAttempts, f.callbackMaxAttempts >= 0, "0 or more"},
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
	if err := checkRetired(args, os.Getenv); err != nil {
		return err
	}
	if err := parseFlags(fs, args, stderr, "chargeauth serve [flags]"); err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return &wrappedUsage{err}
	}
	cidrs, _ := parseCIDRs(f.callbackAllowCIDR) // checked above
	adminToken, err := readAdminToken(f.adminTokenFile, os.Getenv(adminTokenEnv))
	if err != nil {
		return &wrappedUsage{err}
	}
	if adminToken == "" {
		if err := requireLoopback(f.adminListen); err != nil {
			return &wrappedUsage{err}
		}
	}
	log, _ := newLogger(stderr, f.logLevel, f.logFormat)
	slog.SetDefault(log)
	procs := api.ScaleGOMAXPROCS()
	log.Debug("runtime", "gomaxprocs", procs, "cpus", runtime.NumCPU())

	authzURL := f.authzURL
	var ownAddrs []string                // listeners of this process callbacks must not reach
	var aclStatus func() authz.ACLStatus // for /metrics; nil with an external service
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
		aclStatus = srv.ACLStatus
		if f.aclPath != "" {
			defer reloadACL(srv, f.aclPath, f.aclReloadInterval)()
		}
		authzURL = "http://" + ln.Addr().String()
		ownAddrs = append(ownAddrs, ln.Addr().String())
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
		CallbackSchedule:        f.callbackSchedule.Delays,
		CallbackMaxAttempts:     f.callbackMaxAttempts,
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
		AdminToken:              adminToken,
		OwnAddrs:                ownAddrs,
		Logger:                  log,
		ACLStatus:               aclStatus,
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
		log.Info("stopping", "grace_ms", f.shutdownGrace.Milliseconds())
	case err := <-svc.Err():
		log.Error("listener failed", "err", err)
		_ = svc.Close()
		return err
	}
	return svc.Close()
}

// adminTokenEnv holds the admin token itself (not a file name). It is
// read directly, not through a flag, so that the token never appears on a
// command line.
const adminTokenEnv = "CHARGEAUTH_ADMIN_TOKEN"

// readAdminToken returns the admin token from the --admin-token-file file
// (trailing newline trimmed) or from CHARGEAUTH_ADMIN_TOKEN; "" when
// neither is set. Setting both, or an empty file, is a usage error. The
// token is never part of an error message.
func readAdminToken(file, env string) (string, error) {
	if file == "" {
		return strings.TrimSpace(env), nil
	}
	if env != "" {
		return "", fmt.Errorf("--admin-token-file and %s are both set: set one", adminTokenEnv)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %v", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--admin-token-file %s: the file is empty", file)
	}
	return tok, nil
}

// requireLoopback refuses an admin address that is not loopback: the
// admin API is open when no token is configured.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--admin-listen %q: %v", addr, err)
	}
	why := ""
	if host == "" {
		why = "it listens on every interface"
	} else if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.IsLoopback() {
			why = fmt.Sprintf("%s is not a loopback address", ip)
			if ip.IsUnspecified() {
				why = fmt.Sprintf("%s listens on every interface", ip)
			}
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return fmt.Errorf("--admin-listen %q: %v", addr, err)
		}
		for _, ip := range ips {
			if !ip.Unmap().IsLoopback() {
				why = fmt.Sprintf("%s resolves to %s, not a loopback address", host, ip)
				break
			}
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("--admin-listen %s: %s, and no admin token is set: the admin API (sessions, redeliver) would be open to anyone who reaches it; set --admin-token-file or %s, or listen on loopback (127.0.0.1)", addr, why, adminTokenEnv)
}

// drain turns /readyz 503 and keeps serving for delay, so that a load
// balancer's health check takes the node out before it stops taking
// requests. A second signal ends the drain at once.
func drain(svc *api.Service, log *slog.Logger, delay time.Duration, sigs <-chan os.Signal) {
	svc.Drain()
	if delay <= 0 {
		return
	}
	log.Info("draining: /readyz answers 503, requests are still served", "drain_delay_ms", delay.Milliseconds())
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
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: durationMillis}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be json or text", format)
}

// durationMillis keeps durations in one form in every log line: a number of
// milliseconds under a key ending in _ms (README "Logs"). Our own lines
// write them so; this catches a time.Duration from anywhere else (a
// library's line, a slog.Duration), which slog would write as nanoseconds
// in JSON and as "1.5s" in text.
func durationMillis(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindDuration {
		return a
	}
	key := a.Key
	if !strings.HasSuffix(key, "_ms") {
		key += "_ms"
	}
	return slog.Float64(key, float64(a.Value.Duration().Microseconds())/1000)
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

// scheduleFlag is --callback-schedule: comma-separated Go durations.
type scheduleFlag struct{ schedule.Delays }

func (s *scheduleFlag) String() string { return s.Delays.String() }

func (s *scheduleFlag) Set(v string) error {
	d, err := schedule.Parse(v)
	if err != nil {
		return err
	}
	s.Delays = d
	return nil
}

// retiredServeFlags no longer mean anything: given on the command line or
// as a variable, they stop serve with what replaces them (exit 2), rather
// than being ignored.
var retiredServeFlags = []struct{ name, instead string }{
	{"callback-backoff", "--callback-schedule, the delays between attempts (e.g. 0s,5s,5m,30m,2h)"},
	{"callback-max-backoff", "--callback-schedule, whose delays are the whole schedule (e.g. 0s,5s,5m,30m,2h)"},
}

// checkRetired reports the first retired flag in args (up to a "--") or
// in the environment.
func checkRetired(args []string, getenv func(string) string) error {
	for _, r := range retiredServeFlags {
		env := envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(r.name, "-", "_"))
		if getenv(env) != "" {
			return usageError("$%s: --%s is retired: use %s ($%s_CALLBACK_SCHEDULE)", env, r.name, r.instead, envPrefix)
		}
		for _, a := range args {
			if a == "--" {
				break
			}
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if strings.HasPrefix(a, "-") && name == r.name {
				return usageError("--%s is retired: use %s", r.name, r.instead)
			}
		}
	}
	return nil
}
