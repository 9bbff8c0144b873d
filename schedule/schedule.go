// Package schedule is the callback retry schedule of DESIGN.md
// ("Callback"): from a callback's attempts so far and the outcome of the
// last one, it says when the next attempt is due or that the callback has
// failed. It is pure: no I/O, no clock and no randomness of its own (the
// caller passes now and a random draw), so that testdata/next lists its
// rules as cases a reader can scan.
//
// It is the tree's one backoff: the actors' retries of the authorization
// service draw their delays from a Delays too (Doubling).
//
// It is a package of its own beside session/, not part of actors: it is
// a piece of the delivery contract, like session's validation, and cmd
// parses --callback-schedule with it without knowing the actors. It knows
// nothing of the store, of HTTP or of actors. (cenkalti/backoff's
// ExponentialBackOff, used before, computes one doubling sequence with its
// own random source and state; a schedule is a list an operator writes,
// and a pure one takes its draw as an argument.)
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Jitter is how far a delay may move either way, as a fraction of it: a
// delay d becomes one in [d·(1-Jitter), d·(1+Jitter)], so that callbacks
// that failed together do not come back together.
const Jitter = 0.2

// Delays are the waits before each attempt: Delays[0] before the first
// (0: at once), Delays[n] between attempt n and attempt n+1. Past its end,
// the last delay repeats.
type Delays []time.Duration

// Default is Standard Webhooks' example schedule, stretched to about three
// days: at once, then 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h after the
// attempt before.
var Default = Delays{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
	5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour}

// Parse reads a comma-separated list of Go durations ("0s,5s,5m"), as
// --callback-schedule takes it, and validates it.
func Parse(s string) (Delays, error) {
	var d Delays
	if strings.TrimSpace(s) == "" {
		return nil, d.Validate()
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		v, err := time.ParseDuration(f)
		if err != nil {
			return nil, fmt.Errorf("schedule: %q: not a duration (e.g. 0s,5s,5m,2h)", f)
		}
		d = append(d, v)
	}
	return d, d.Validate()
}

// Validate reports what makes d unusable as a callback schedule.
func (d Delays) Validate() error {
	switch {
	case len(d) == 0:
		return errors.New("schedule: empty: give at least the first attempt's delay, 0s")
	case d[0] != 0:
		return fmt.Errorf("schedule: first delay %v: must be 0s (the first attempt is at once, after the decision)", d[0])
	}
	for i, v := range d {
		if v < 0 {
			return fmt.Errorf("schedule: delay %d is %v: must not be negative", i+1, v)
		}
	}
	return nil
}

// String writes d as Parse reads it, each delay without its zero units
// ("5m", not "5m0s").
func (d Delays) String() string {
	var b strings.Builder
	for i, v := range d {
		if i > 0 {
			b.WriteByte(',')
		}
		s := v.String()
		if strings.HasSuffix(s, "m0s") {
			s = s[:len(s)-2]
		}
		if strings.HasSuffix(s, "h0m") {
			s = s[:len(s)-2]
		}
		b.WriteString(s)
	}
	return b.String()
}

// After is the wait after n attempts (n >= 0) before the next one: Delays[n],
// or the last delay past the end, jittered by u, a random draw in [0, 1)
// (0.5: no jitter).
func (d Delays) After(n int, u float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	v := d[min(max(n, 0), len(d)-1)]
	return time.Duration(float64(v) * (1 + Jitter*(2*u-1)))
}

// Shortest is the shortest delay between two attempts (0 if there is none
// but the first).
func (d Delays) Shortest() time.Duration {
	var s time.Duration
	for _, v := range d[min(1, len(d)):] {
		if s == 0 || (v > 0 && v < s) {
			s = v
		}
	}
	return s
}

// Doubling is at once, then first, doubling up to most, which then
// repeats: an exponential backoff as a schedule.
func Doubling(first, most time.Duration) Delays {
	d := Delays{0}
	if first <= 0 {
		return d
	}
	for v := first; v > 0 && v < most; v *= 2 {
		d = append(d, v)
	}
	return append(d, max(most, first))
}

// Policy is a callback's whole schedule.
type Policy struct {
	// Delays between attempts. Default: Default.
	Delays Delays
	// MaxAttempts caps the attempts, the first included: fewer than
	// len(Delays) cuts the schedule short, more repeats its last delay.
	// Default: 0, len(Delays).
	MaxAttempts int
	// MaxAge: no attempt is planned later than this after the round's
	// start (the decision, or the operator's last redelivery); if the
	// schedule's next attempt would come later, the last one is at the max
	// age. 0: no limit.
	MaxAge time.Duration
}

// Outcome is what one attempt brought.
type Outcome struct {
	// Delivered: the receiver answered 2xx.
	Delivered bool
	// StatusCode is the receiver's HTTP status; 0 if none arrived (a
	// refused connection, a timeout).
	StatusCode int
	// RetryAfter is the receiver's Retry-After (0: none); it lengthens the
	// next delay, never shortens it.
	RetryAfter time.Duration
	// Final: no attempt can succeed (a forbidden destination, a bad URL).
	Final bool
}

// Verdict is what follows an attempt.
type Verdict int

const (
	// Delivered: no more attempts, the callback is delivered.
	Delivered Verdict = iota
	// Retry: the next attempt is due at Next.At.
	Retry
	// Failed: no more attempts (Next.Why says why); an operator may redeliver.
	Failed
)

// Next is the schedule's answer.
type Next struct {
	Verdict Verdict
	At      time.Time // Retry: when the next attempt is due
	Why     string    // Failed: why no attempt follows ("" if the attempt's error says it)
}

// Next says what follows attempt number made (1: the first) of a round
// that started at start, which ended at now with o. u is a random draw in
// [0, 1) that jitters the delay.
func (p Policy) Next(start time.Time, made int, o Outcome, now time.Time, u float64) Next {
	delays, most := p.Delays, p.MaxAttempts
	if len(delays) == 0 {
		delays = Default
	}
	if most <= 0 {
		most = len(delays)
	}
	switch {
	case o.Delivered:
		return Next{Verdict: Delivered}
	case o.StatusCode == 410:
		return Next{Verdict: Failed, Why: "the receiver answered 410 Gone"}
	case o.Final:
		return Next{Verdict: Failed}
	case made >= most:
		return Next{Verdict: Failed, Why: fmt.Sprintf("no attempts left after %d", made)}
	}
	at := now.Add(max(delays.After(made, u), o.RetryAfter))
	if p.MaxAge > 0 {
		last := start.Add(p.MaxAge)
		if !now.Before(last) {
			return Next{Verdict: Failed, Why: "callback max age reached"}
		}
		if at.After(last) {
			at = last
		}
	}
	return Next{Verdict: Retry, At: at}
}
