package actors

import "time"

// The pipeline yields to the front while the front is hot.
//
// In a burst the front (Accept) and the pipeline behind it (request actors,
// authorization calls, decisions, callbacks) share the CPU. A request costs
// the pipeline several times what its accept costs the front, so a pipeline
// running at full speed holds the front to the pipeline's pace, and the
// backlog on disk, which exists for the burst, is hardly used.
//
// Neither the accept rate nor the backlog tells a hot front from a steady
// one: with the pipeline at full speed, both settle where the pipeline
// keeps up. What tells them apart is what the front does when the pipeline
// makes room. So the yield controller probes: every yieldProbeEvery windows
// of yieldWindow ticks in which the front took at least yieldMinAccepts
// with, on average over the window's ticks, at least yieldMinAccepting
// accepts in flight (waiting for their fsync), it paces the pipeline for
// one window and compares the accepts with the window before:
//
//   - at least yieldGain more (the front was waiting for the CPU): the
//     front is hot, and the pipeline stays paced;
//   - otherwise (an open loop the pipeline keeps up with takes the same
//     with or without it): back to full speed.
//
// The accepts in flight keep a steady load from being probed: by Little's
// law they are the accept rate times the accept's latency, about 4 for an
// open loop of 3000/s that the machine keeps up with (1.2 ms an accept),
// and 40 to 60 for a closed-loop burst of 64 connections. A probe costs an
// open loop its ack latency (the requests held on disk are read back and
// spawned together when it ends: ack p99 twice as high in one run), so
// only a front with many callers waiting is probed.
//
// While hot, every yieldProbeEvery windows it lets the pipeline run at full
// speed for one window: if the front then takes at most 1/yieldGain of the
// paced window's, it is still hot (paced again); otherwise, or once a
// window takes fewer than yieldMinAccepts (the burst is over), full speed.
//
// Paced, the supervisor admits at most yieldPacedPerTick requests a tick
// (released, yieldReleasePerTick)
// into the pipeline (request actors), read back from the store in one scan
// a tick; the rest wait on disk, in the order they came. The pace is the
// floor: the pipeline never stops, and every request is decided (those
// whose deadline passed while they waited, unknown, at once).
const (
	yieldTick         = 20 * time.Millisecond
	yieldWindow       = 10 // ticks
	yieldProbeEvery   = 5  // windows
	yieldMinAccepts   = 100
	yieldMinAccepting = 16 // mean accepts in flight over a window
	yieldGainNum      = 5  // yieldGain = 5/4
	yieldGainDen      = 4
	yieldPacedPerTick = 20 // 1000 requests a second
	// Released (to see whether the front slows down), the pipeline admits
	// up to 8000 a second, more than it decides at full speed here, but
	// not the whole backlog at once: MaxInflight request actors spawned in
	// one tick would run on, unpaced, through the next paced windows.
	yieldReleasePerTick = 160
)

type yieldState int

const (
	yieldSteady    yieldState = iota // full speed
	yieldProbing                     // paced, to see whether the front speeds up
	yieldHot                         // paced: the front is hot
	yieldReleasing                   // full speed, to see whether the front slows down
)

func (s yieldState) paced() bool { return s == yieldProbing || s == yieldHot }

// admissions is how many requests the supervisor may admit a tick in
// state s; 0: as many as MaxInflight allows.
func (s yieldState) admissions() int64 {
	switch s {
	case yieldProbing, yieldHot:
		return yieldPacedPerTick
	case yieldReleasing:
		return yieldReleasePerTick
	}
	return 0
}

// yielder is the controller's state. Only the controller's goroutine
// touches it.
type yielder struct {
	state    yieldState
	ticks    int   // ticks into the current window
	windows  int   // windows since the last probe
	start    int64 // accepted total at the window's start
	previous int64 // accepts in the window before
	waiting  int64 // accepts in flight, summed over the window's ticks
}

// step counts one tick, given the total of requests accepted so far and
// the accepts in flight now, and returns whether the pipeline is paced for
// the next tick (y.state tells how fast).
func (y *yielder) step(accepted, accepting int64) bool {
	y.ticks++
	y.waiting += accepting
	if y.ticks < yieldWindow {
		return y.state.paced()
	}
	n, busy := accepted-y.start, y.waiting >= yieldMinAccepting*yieldWindow
	y.ticks, y.start, y.waiting = 0, accepted, 0
	before := y.previous
	y.previous = n
	switch y.state {
	case yieldSteady:
		y.windows++
		if n >= yieldMinAccepts && busy && y.windows >= yieldProbeEvery {
			y.state, y.windows = yieldProbing, 0
		}
	case yieldProbing:
		if n >= yieldMinAccepts && n*yieldGainDen >= before*yieldGainNum {
			y.state = yieldHot
		} else {
			y.state = yieldSteady
		}
	case yieldHot:
		y.windows++
		switch {
		case n < yieldMinAccepts:
			y.state, y.windows = yieldSteady, 0
		case y.windows >= yieldProbeEvery:
			y.state, y.windows = yieldReleasing, 0
		}
	case yieldReleasing:
		if n >= yieldMinAccepts && n*yieldGainNum <= before*yieldGainDen {
			y.state = yieldHot
		} else {
			y.state = yieldSteady
		}
	}
	return y.state.paced()
}

// runYield steps the controller on every tick of ticks until stop closes.
// Paced or released, it gives the supervisor the state's admissions for
// the tick and tells it to admit from the store.
//
// After a window without accepts at full speed it sleeps (pause stops
// the ticks) until the next accept wakes it (resume starts them again):
// an idle node does not wake up fifty times a second. Its first window
// counts from the accept that woke it. A nil pause: it never sleeps.
func (e *Engine) runYield(ticks <-chan time.Time, stop <-chan struct{}, pause, resume func()) {
	var y yielder
	for {
		select {
		case <-stop:
			return
		case <-ticks:
		}
		accepted := e.acceptedTotal.Load()
		accepting := e.accepting.Load()
		if e.cfg.yieldAccepting != nil {
			accepting = e.cfg.yieldAccepting()
		}
		y.step(accepted, accepting)
		n := y.state.admissions()
		if n > 0 {
			e.admissions.Store(n)
		}
		was := e.paced.Swap(n > 0)
		if n > 0 || was {
			e.system.Root.Send(e.supervisor, &paceTick{})
		}
		if e.cfg.yieldStepped != nil {
			e.cfg.yieldStepped <- y.state.paced()
		}
		if pause != nil && y.state == yieldSteady && y.ticks == 0 && y.previous == 0 {
			if !e.yieldSleep(accepted, stop, pause, resume) {
				return
			}
			y.ticks, y.start, y.waiting = 0, accepted, 0
		}
	}
}

// yieldSleep waits, the ticks paused, for an accept after the first
// accepted; it returns false if stop closed meanwhile. An accept that
// comes as it falls asleep either sees yieldAsleep (and wakes it) or is
// seen in acceptedTotal (and it does not sleep): both are sequentially
// consistent atomics.
func (e *Engine) yieldSleep(accepted int64, stop <-chan struct{}, pause, resume func()) bool {
	select {
	case <-e.yieldWake: // stale: from an accept after the last sleep ended
	default:
	}
	e.yieldAsleep.Store(true)
	defer e.yieldAsleep.Store(false)
	if e.acceptedTotal.Load() != accepted {
		return true
	}
	pause()
	select {
	case <-stop:
		return false
	case <-e.yieldWake:
	}
	resume()
	return true
}

// wakeYield wakes the yield controller if it sleeps (after an accept).
func (e *Engine) wakeYield() {
	if e.yieldAsleep.Load() {
		select {
		case e.yieldWake <- struct{}{}:
		default: // a wake is pending already
		}
	}
}

// paceTick tells the supervisor to admit what the pace allows from the
// store. The controller stops first in Stop: none arrives after the
// supervisor stopped.
type paceTick struct{}

// admit takes one admission: always while the pipeline runs at full speed,
// one of the tick's while it is paced.
func (e *Engine) admit() bool {
	if !e.paced.Load() {
		return true
	}
	return e.admissions.Add(-1) >= 0
}

// admissible is how many requests the supervisor may admit now, at most n.
func (e *Engine) admissible(n int) int {
	if !e.paced.Load() {
		return n
	}
	return int(min(int64(n), max(0, e.admissions.Load())))
}

// Paced says whether the supervisor's admissions are paced now: the front
// is hot (or being probed).
func (e *Engine) Paced() bool { return e.paced.Load() }
