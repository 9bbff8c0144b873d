package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/node"
)

// authzEnv: the standalone authorization service reads CHARGEAUTH_AUTHZ_<FLAG>.
// CHARGEAUTH_AUTHZ_LISTEN is also serve's variable for --authz-listen, on
// purpose: both name where the authorization service listens.
var authzEnv = prefixEnv(envPrefix + "_AUTHZ")

// authzCmd runs the authorization service on its own.
func authzCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("authz", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8081", "address of the authorization service")
	aclPath := fs.String("acl", "", "ACL file (empty: a small built-in sample)")
	reloadEvery := fs.Duration("acl-reload-interval", time.Second, "how often the --acl file is checked for changes (0: only on SIGHUP)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "json or text")
	if err := parseFlagsEnv(fs, args, "chargeauth authz [flags]", authzEnv); err != nil {
		return err
	}
	log, err := node.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return usageError("%v", err)
	}
	warnSysmon(log)
	a := acl.Sample()
	if *aclPath != "" {
		if a, err = acl.Load(*aclPath); err != nil {
			return usageError("--acl: %v", err)
		}
	}
	// The handlers are in place before the port opens: a SIGTERM as soon
	// as it accepts (a supervisor that saw it ready) stops the service,
	// exit 0; a SIGHUP reloads the ACL (--acl) or does nothing.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv := authz.NewServer(authz.Config{ACL: a, Logger: log})
	if *aclPath != "" {
		defer reloadACL(srv, *aclPath, *reloadEvery)()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return usageError("--listen: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	slog.Info("stopping")
	return srv.Shutdown()
}
