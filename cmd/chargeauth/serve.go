package main

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/chargeauth/chargeauth/node"
)

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := node.Defaults()
	cfg.Bind(fs) // every flag, its default and its help come from node.Config
	if err := checkRetired(args, os.Getenv); err != nil {
		return err
	}
	if err := parseFlags(fs, args, stderr, "chargeauth serve [flags]"); err != nil {
		return err
	}
	cfg.AdminToken = os.Getenv(node.AdminTokenEnv)
	if err := cfg.Validate(); err != nil {
		return &wrappedUsage{err}
	}
	log, _ := node.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat) // checked by Validate
	slog.SetDefault(log)
	cfg.Logger = log
	procs := node.ScaleGOMAXPROCS()
	log.Debug("runtime", "gomaxprocs", procs, "cpus", runtime.NumCPU(), "sysmon_awake", node.SysmonAwake())
	warnSysmon(log)

	// Before the node starts: a signal during its start (resume may take
	// a while) then stops it once it is up, with exit 0; SIGHUP, which
	// reloads the ACL once the node runs, does nothing until then.
	signal.Ignore(syscall.SIGHUP)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	n, err := node.Start(cfg)
	if errors.Is(err, node.ErrListen) || errors.Is(err, node.ErrACL) {
		return usageError("%v", err)
	}
	if err != nil {
		return err
	}
	if cfg.ACL != "" {
		defer reloadACL(n.Authz(), cfg.ACL, cfg.ACLReloadInterval)()
	}
	select {
	case <-sigs:
		drain(n, log, cfg.DrainDelay, sigs)
		log.Info("stopping", "grace_ms", cfg.ShutdownGrace.Milliseconds())
	case err := <-n.Err():
		log.Error("listener failed", "err", err)
		_ = n.Close()
		return err
	}
	return n.Close()
}

// drain turns /readyz 503 and keeps serving for delay, so that a load
// balancer's health check takes the node out before it stops taking
// requests. A second signal ends the drain at once.
func drain(n *node.Node, log *slog.Logger, delay time.Duration, sigs <-chan os.Signal) {
	n.Drain()
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

// retiredServeFlags no longer mean anything: given on the command line or
// as a variable, they stop serve with what replaces them (exit 2), rather
// than being ignored.
// (--callback-backoff, retired with it once, is back: DESIGN.md's "first
// retry delay", the second entry of --callback-schedule.)
var retiredServeFlags = []struct{ name, instead string }{
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
