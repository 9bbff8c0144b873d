package actors

import "time"

// maxWakeGap caps the callback sender's least time between two wakes (the
// schedule's shortest delay, if shorter).
const maxWakeGap = time.Second

// wakeTimer is one timer an actor re-arms for the earliest of many times,
// never sooner than gap after it last fired, so that times falling due one
// by one are handled in batches. The actor owns it (not safe for
// concurrent use); the timer's message carries gen, which tells a timer
// stopped too late from the one armed now.
type wakeTimer struct {
	gap   time.Duration
	at    time.Time // when the armed timer fires (zero: none armed)
	timer *time.Timer
	gen   uint64
	last  time.Time // when the last wake came
}

// by arms the timer for t (or the end of the gap after the last wake),
// unless it is armed for earlier already. now is the actor's clock; send
// delivers the wake's message, with its gen, to the actor.
func (w *wakeTimer) by(t, now time.Time, send func(gen uint64)) {
	if gapEnd := w.last.Add(w.gap); t.Before(gapEnd) {
		t = gapEnd
	}
	if !w.at.IsZero() && !t.Before(w.at) {
		return
	}
	w.stop()
	w.gen++
	gen := w.gen
	w.at = t
	w.timer = time.AfterFunc(t.Sub(now), func() { send(gen) })
}

// fired takes the wake with number gen at now: false if it is not the
// armed one's.
func (w *wakeTimer) fired(gen uint64, now time.Time) bool {
	if gen != w.gen || w.at.IsZero() {
		return false
	}
	w.at, w.timer, w.last = time.Time{}, nil, now
	return true
}

// stop disarms the timer.
func (w *wakeTimer) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
	w.at, w.timer = time.Time{}, nil
}
