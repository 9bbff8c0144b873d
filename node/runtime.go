package node

import (
	"os"
	"runtime"
	"strconv"
	"strings"
)

// ScaleGOMAXPROCS doubles GOMAXPROCS (the runtime's default: the CPUs the
// process may use) unless the GOMAXPROCS environment variable sets it, and
// returns the value in force. serve and the bench call it before starting a node.
//
// The service's goroutines block in system calls (Pebble's fsyncs, socket
// writes) and hand work to one another in long chains (front, supervisor,
// request actor, pool, worker, callback sender). With as many Ps as cores,
// a P held by a blocked call idles a core until the runtime takes it back,
// and every hop of a chain waits in a longer run queue. On 2 cores, 4 Ps
// cut the end-to-end p99 of `go run ./bench -rate 5000` from 300-440 ms to
// 48 ms and raised the accepts it kept up with (README, Performance).
func ScaleGOMAXPROCS() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := 2 * runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(n)
	return n
}

// SysmonGODEBUG is the GODEBUG setting ReexecWithSysmonAwake adds:
// schedtrace at its largest period, 2^31-1 ms (24.8 days).
const SysmonGODEBUG = "schedtrace=2147483647"

// ReexecWithSysmonAwake replaces the process (execve: same PID, same
// arguments, same open files) with itself under GODEBUG=schedtrace=
// 2147483647, unless GODEBUG already sets schedtrace (schedtrace=0 keeps
// the runtime's default). It returns only if it did not exec: nil if the
// setting was there, else why the exec failed (the process may carry on
// without it). chargeauth's main calls it for serve and authz, before
// anything else; the bench's chargeauth is serve.
//
// Why: Go's sysmon thread sleeps for good while every P is idle, and the
// next system call wakes it and sets its period back to 20 µs; it polls
// that fast for at least a millisecond before it backs off. A node at a
// few hundred requests a second goes idle between requests, so each
// request paid for dozens of sysmon wake-ups: at 500/s, 17% of the node's
// CPU in a profile. With schedtrace set, sysmon never takes the long sleep
// (it stays up to print the trace) and backs off to 10 ms while nothing
// happens. Measured in the README ("Operating chargeauth").
//
// The price, from the runtime's sources (Go 1.26): one scheduler line
// ("SCHED ...") on stderr at start on a machine up for more than 24.8
// days, and one every 24.8 days after (the period counts from the
// machine's boot, CLOCK_MONOTONIC); a fatal error (an unrecovered panic, a
// throw, SIGQUIT) prints the scheduler's detail, a line per P, M and
// goroutine, before its traceback; and the start takes a second runtime
// start-up, during which a SIGTERM still kills the process (as before the
// signal handlers are in place, now for some tens of milliseconds more).
func ReexecWithSysmonAwake() error {
	if _, set := schedtrace(); set {
		return nil
	}
	// On Linux, the file this process runs, even if it was replaced or
	// removed since (os.Executable would follow the new file's name).
	self := "/proc/self/exe"
	if runtime.GOOS != "linux" {
		var err error
		if self, err = os.Executable(); err != nil {
			return err
		}
	}
	godebug := os.Getenv("GODEBUG")
	if godebug != "" {
		godebug += ","
	}
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	return execve(self, os.Args, append(env, "GODEBUG="+godebug+SysmonGODEBUG))
}

// SysmonAwake reports whether this process runs with GODEBUG's schedtrace
// on (ReexecWithSysmonAwake's, or the operator's): a value the runtime
// takes (a 32-bit integer) and above 0.
func SysmonAwake() bool {
	v, _ := schedtrace()
	n, err := strconv.ParseInt(v, 10, 32)
	return err == nil && n > 0
}

// schedtrace is GODEBUG's schedtrace setting, the last one if several (the
// runtime reads them left to right).
func schedtrace() (value string, set bool) {
	for setting := range strings.SplitSeq(os.Getenv("GODEBUG"), ",") {
		if v, ok := strings.CutPrefix(setting, "schedtrace="); ok {
			value, set = v, true
		}
	}
	return value, set
}
