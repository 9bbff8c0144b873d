// Command chargeauth runs the service and its companions:
//
//	chargeauth serve      the service (public API, admin listener, embedded authorization service)
//	chargeauth authz      the authorization service on its own
//	chargeauth sessions   inspect requests and redeliver failed callbacks
//	chargeauth sink       print the callbacks it receives (for trying chargeauth locally)
//	chargeauth version    print the version
//
// serve's flags also read CHARGEAUTH_<FLAG_IN_CAPS>; the other commands read
// only their own variables (their -h lists them). Exit codes: 0 success,
// 1 failure while running, 2 bad usage or configuration (nothing started).
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/persistence"
)

// errUsage marks errors that exit with code 2: bad flags, bad
// configuration, anything found before the service starts. Its own text is
// not shown.
var errUsage = errors.New("usage")

// usageError wraps err as an errUsage.
func usageError(format string, args ...any) error {
	return &wrappedUsage{fmt.Errorf(format, args...)}
}

type wrappedUsage struct{ err error }

func (w *wrappedUsage) Error() string   { return w.err.Error() }
func (w *wrappedUsage) Unwrap() []error { return []error{errUsage, w.err} }

const usage = `chargeauth decides EV charging-session requests asynchronously.

Usage: chargeauth <command> [flags]

Commands:
  serve      run the service (public API, admin listener, embedded authorization service)
  authz      run the authorization service on its own
  sessions   list, get or redeliver requests (through the admin API, or --data-dir when stopped)
  sink       print the callbacks it receives and check their signatures, for trying chargeauth locally
  version    print the version, revision, build time and Go version

Run 'chargeauth <command> -h' for the flags of a command. serve reads
CHARGEAUTH_<FLAG> (--decision-timeout: CHARGEAUTH_DECISION_TIMEOUT); the
other commands read only their own variables, which their help lists.

Exit codes: 0 done, 1 failure while running, 2 bad usage or configuration.
`

// reexecErr is why main could not restart serve or authz with sysmon
// awake (node.ReexecWithSysmonAwake); they log it.
var reexecErr error

// warnSysmon logs reexecErr, if any, at warn: the command runs, at a
// higher CPU cost per request at low rates.
func warnSysmon(log *slog.Logger) {
	if reexecErr != nil {
		log.Warn("could not restart with GODEBUG="+node.SysmonGODEBUG+"; running without it (more CPU per request at low rates)", "err", reexecErr)
	}
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "serve" || os.Args[1] == "authz") {
		reexecErr = node.ReexecWithSysmonAwake() // returns only if it did not exec
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	cmd := args[0]
	switch cmd {
	case "serve":
		err = serve(args[1:], stderr)
	case "authz":
		err = authzCmd(args[1:], stderr)
	case "sessions":
		err = sessions(args[1:], stdout, stderr)
	case "sink":
		err = sink(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		if len(args) > 1 && (args[1] == "-h" || args[1] == "--help") {
			fmt.Fprint(stdout, "Usage: chargeauth version\n\nPrints the version, revision, build time and Go version.\n")
			return 0
		}
		fmt.Fprint(stdout, versionText(readBuildFacts(debug.ReadBuildInfo())))
		return 0
	case "help", "-h", "--help", "-help":
		if len(args) > 1 && args[0] == "help" {
			return run([]string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "chargeauth: unknown command %q (see 'chargeauth -h')\n", cmd)
		return 2
	}
	var help *helpShown
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.text)
		return 0
	case errors.Is(err, errUsage), errors.Is(err, persistence.ErrLocked):
		// A data directory another chargeauth holds is a configuration
		// error too: nothing started.
		fmt.Fprintf(stderr, "chargeauth %s: %v\n", cmd, err)
		return 2
	default:
		fmt.Fprintf(stderr, "chargeauth %s: %v\n", cmd, err)
		return 1
	}
}
