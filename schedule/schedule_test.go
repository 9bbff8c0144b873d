package schedule

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestNext runs testdata/next. Commands:
//
//	policy [delays=<list>] [max-attempts=<n>] [max-age=<duration>]
//	                                   the policy of the cases below
//	parse                              Parse the input, print it back
//	next made=<n> [now=<duration>] [status=<code>] [retry-after=<duration>]
//	     [delivered] [final] [u=<draw>]
//	                                   what follows attempt made, which
//	                                   ended at now (after the round's start)
//	run [down=<duration>] [status=<code>] [u=<draw>] [retry-after=<duration>]
//	                                   every attempt of one callback decided
//	                                   at +0s, to a receiver that answers
//	                                   status (0: no answer) until down
//	                                   has passed (default: never), then 2xx
//
// Times print as offsets from the round's start. u defaults to 0.5 (no
// jitter). Refresh with: go test ./schedule -run TestNext -rewrite
func TestNext(t *testing.T) {
	var p Policy
	datadriven.RunTest(t, "testdata/next", func(t *testing.T, d *datadriven.TestData) string {
		dur := func(key string, def time.Duration) time.Duration {
			var s string
			if !d.MaybeScanArgs(t, key, &s) {
				return def
			}
			v, err := time.ParseDuration(strings.TrimPrefix(s, "+"))
			if err != nil {
				d.Fatalf(t, "%s: %v", key, err)
			}
			return v
		}
		outcome := func() (Outcome, float64) {
			o := Outcome{Delivered: d.HasArg("delivered"), Final: d.HasArg("final"), RetryAfter: dur("retry-after", 0)}
			d.MaybeScanArgs(t, "status", &o.StatusCode)
			u := 0.5
			d.MaybeScanArgs(t, "u", &u)
			return o, u
		}
		switch d.Cmd {
		case "policy":
			p = Policy{Delays: Default, MaxAge: dur("max-age", 0)}
			var list string
			if d.MaybeScanArgs(t, "delays", &list) {
				var err error
				if p.Delays, err = Parse(list); err != nil {
					return "error: " + err.Error()
				}
			}
			d.MaybeScanArgs(t, "max-attempts", &p.MaxAttempts)
			return fmt.Sprintf("delays=%s max-attempts=%d max-age=%s", p.Delays, p.MaxAttempts, Delays{p.MaxAge})
		case "parse":
			v, err := Parse(strings.TrimSpace(d.Input))
			if err != nil {
				return "error: " + err.Error()
			}
			return v.String()
		case "next":
			var made int
			d.ScanArgs(t, "made", &made)
			o, u := outcome()
			return format(p.Next(t0, made, o, t0.Add(dur("now", 0)), u))
		case "run":
			o, u := outcome()
			down := dur("down", 1<<62) // default: never back
			var b strings.Builder
			at := t0
			for made := 1; made <= 1000; made++ {
				res := o
				res.Delivered = !at.Before(t0.Add(down))
				next := p.Next(t0, made, res, at, u)
				fmt.Fprintf(&b, "attempt %d at %s: %s\n", made, offset(at), format(next))
				if next.Verdict != Retry {
					break
				}
				at = next.At
			}
			return b.String()
		}
		d.Fatalf(t, "unknown command %q", d.Cmd)
		return ""
	})
}

func format(n Next) string {
	switch n.Verdict {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry at " + offset(n.At)
	}
	if n.Why == "" {
		return "failed"
	}
	return "failed: " + n.Why
}

// offset prints t as +<duration since t0>, without zero units.
func offset(t time.Time) string { return "+" + Delays{t.Sub(t0)}.String() }

// With the default schedule and max age, a receiver down for up to 20
// hours gets every callback decided while it was down, at the first
// attempt after it is back, whatever the jitter draws and whenever in
// the outage the decision came.
func TestDefaultCoversTwentyHoursDown(t *testing.T) {
	p := Policy{Delays: Default, MaxAge: 72 * time.Hour}
	for _, down := range []time.Duration{time.Minute, time.Hour, 5 * time.Hour, 17 * time.Hour, 20 * time.Hour} {
		for _, into := range []time.Duration{0, time.Minute, down / 2, down - time.Second} { // the decision, after the outage began
			for _, u := range []float64{0, 0.25, 0.5, 0.75, 0.999999} {
				back := down - into // from the decision, when the receiver is back
				at, delivered := time.Duration(0), false
				for made := 1; made <= len(Default); made++ {
					next := p.Next(t0, made, Outcome{Delivered: at >= back, StatusCode: 503}, t0.Add(at), u)
					if next.Verdict == Delivered {
						delivered = true
						break
					}
					if next.Verdict != Retry {
						break
					}
					at = next.At.Sub(t0)
				}
				if !delivered {
					t.Errorf("down %v, decided %v into it, u=%v: never delivered (last attempt at +%v)", down, into, u, at)
				}
			}
		}
	}
}

// The jitter stays within Jitter either way, and spreads: the draws'
// extremes reach both ends.
func TestAfterJitter(t *testing.T) {
	d := Delays{0, 10 * time.Second}
	if got := d.After(1, 0); got != 8*time.Second {
		t.Errorf("u=0: %v, want 8s", got)
	}
	if got := d.After(1, 0.5); got != 10*time.Second {
		t.Errorf("u=0.5: %v, want 10s", got)
	}
	if got := d.After(1, 0.999999); got < 11999*time.Millisecond || got > 12*time.Second {
		t.Errorf("u→1: %v, want just under 12s", got)
	}
	if got := d.After(7, 0.5); got != 10*time.Second {
		t.Errorf("past the end: %v, want the last delay, 10s", got)
	}
	if got := d.After(0, 0.9); got != 0 {
		t.Errorf("the first delay: %v, want 0", got)
	}
}

func TestDoubling(t *testing.T) {
	for _, c := range []struct {
		first, most time.Duration
		want        string
	}{
		{50 * time.Millisecond, 500 * time.Millisecond, "0s,50ms,100ms,200ms,400ms,500ms"},
		{time.Second, time.Second, "0s,1s"},
		{time.Second, 0, "0s,1s"},
		{0, time.Second, "0s"},
	} {
		if got := Doubling(c.first, c.most).String(); got != c.want {
			t.Errorf("Doubling(%v, %v) = %s, want %s", c.first, c.most, got, c.want)
		}
	}
}
