package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// maxWakeGap caps the callback sender's least time between two wakes (the
// schedule's shortest delay, if shorter).
const maxWakeGap = time.Second

// wakeTimer is one timer an actor re-arms for the earliest of many times,
// never sooner than gap after it last fired, so that times falling due one
// by one are handled in batches. The actor owns it (not safe for
// concurrent use) and stops it when it stops. Its message, a
// *wakeCallbacks, carries gen, which tells a wake already in the mailbox
// when the timer was re-armed from the one armed now.
type wakeTimer struct {
	gap   time.Duration
	at    time.Time // when the armed timer fires (zero: none armed)
	timer sendTimer
	gen   uint64
	last  time.Time // when the last wake came
}

// by arms the timer for t (or the end of the gap after the last wake),
// unless it is armed for earlier already. now is the actor's clock; the
// wake goes to pid.
func (w *wakeTimer) by(t, now time.Time, root *actor.RootContext, pid *actor.PID) {
	if gapEnd := w.last.Add(w.gap); t.Before(gapEnd) {
		t = gapEnd
	}
	if !w.at.IsZero() && !t.Before(w.at) {
		return
	}
	w.gen++
	w.at = t
	w.timer.start(t.Sub(now), root, pid, &wakeCallbacks{gen: w.gen})
}

// fired takes the wake with number gen at now: false if it is not the
// armed one's.
func (w *wakeTimer) fired(gen uint64, now time.Time) bool {
	if gen != w.gen || w.at.IsZero() {
		return false
	}
	w.at, w.last = time.Time{}, now
	return true
}

// stop disarms the timer.
func (w *wakeTimer) stop() {
	w.timer.stop()
	w.at = time.Time{}
}
