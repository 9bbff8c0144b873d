// Command chargeauth runs the service and its companions:
//
//	chargeauth serve      the service (public API, admin listener, embedded authorization service)
//	chargeauth authz      the authorization service on its own
//	chargeauth sessions   inspect requests and redeliver failed callbacks
//	chargeauth sink       print the callbacks it receives (for trying chargeauth locally)
//	chargeauth version    print the version
//
// Every flag also reads CHARGEAUTH_<FLAG_IN_CAPS>. Exit codes: 0 success,
// 1 failure while running, 2 bad usage or configuration (nothing started).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
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
  sink       print the callbacks it receives, for trying chargeauth locally
  version    print the version

Run 'chargeauth <command> -h' for the flags of a command. Every flag also reads
the environment variable CHARGEAUTH_<FLAG> (--decision-timeout: CHARGEAUTH_DECISION_TIMEOUT).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "authz":
		err = authzCmd(args[1:], stderr)
	case "sessions":
		err = sessions(args[1:], stdout, stderr)
	case "sink":
		err = sink(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "chargeauth", version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "chargeauth: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "chargeauth:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "chargeauth:", err)
		return 1
	}
}
