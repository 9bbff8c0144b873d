package node

import (
	"os"
	"runtime"
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
