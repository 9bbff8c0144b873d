package actors

import (
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// mailboxThroughput is how many messages a mailbox run handles before it
// yields its goroutine: protoactor's default.
const mailboxThroughput = 300

// maxMailboxWorkers bounds the goroutines a dispatcher keeps idle for
// mailbox runs. Each keeps its stack (grown to what a store transition
// needs, some 16-32 KiB), so the bound keeps that memory small; past it a
// run gets a goroutine of its own, as with protoactor's default.
const maxMailboxWorkers = 128

// reuseDispatcher is protoactor's default dispatcher (each mailbox run on
// a goroutine) with the goroutines kept: a run goes to an idle worker if
// one waits, else to a new worker while fewer than maxMailboxWorkers exist,
// else to a goroutine of its own. protoactor starts a run each time a
// message reaches an idle mailbox, about eight times per request, and a
// fresh goroutine starts on a small stack that the store's calls grow,
// copying it, again and again; a kept worker's stack is already grown.
// Runs never wait for each other: a run is handed only to a worker that
// is idle.
type reuseDispatcher struct {
	work    chan func() // unbuffered: a send succeeds only to a waiting worker
	quit    chan struct{}
	workers atomic.Int32 // goroutines of workers
	idle    atomic.Int32 // workers waiting for a run
	stop    sync.Once
}

var _ actor.Dispatcher = (*reuseDispatcher)(nil)

func newReuseDispatcher() *reuseDispatcher {
	return &reuseDispatcher{work: make(chan func()), quit: make(chan struct{})}
}

func (d *reuseDispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn:
		return
	default:
	}
	if d.workers.Add(1) <= maxMailboxWorkers {
		go d.worker(fn)
		return
	}
	d.workers.Add(-1)
	go fn()
}

func (d *reuseDispatcher) worker(fn func()) {
	defer d.workers.Add(-1)
	for {
		fn()
		d.idle.Add(1)
		select {
		case fn = <-d.work:
			d.idle.Add(-1)
		case <-d.quit:
			d.idle.Add(-1)
			return
		}
	}
}

func (d *reuseDispatcher) Throughput() int { return mailboxThroughput }

// close ends the idle workers; a run scheduled after it gets a goroutine
// of its own (a worker may take it before it sees quit).
func (d *reuseDispatcher) close() { d.stop.Do(func() { close(d.quit) }) }
