package actors

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// submit runs an attempt on one of up to CallbackConcurrency long-lived
// goroutines, started as needed. A goroutine per attempt spent about 3% of
// the service's CPU growing its stack (fasthttp's client and Pebble's commit
// run deep); these keep theirs. busy bounds the attempts in flight to
// CallbackConcurrency, the channel's capacity, so the send never blocks.
func (c *callbackSender) submit(attempt func()) {
	if c.e.attemptWorkers < c.busy {
		c.e.attemptWorkers++
		go func() {
			for attempt := range c.e.attempts {
				attempt()
			}
		}()
	}
	c.e.attempts <- attempt
}

// attempt POSTs once, asks the schedule what follows and stores the
// outcome. It runs on an attempt goroutine.
func (c *callbackSender) attempt(rec session.Record) *CallbackAttempted {
	cfg := &c.e.cfg
	// The attempt follows the stored record, not the copy the sender
	// owns: a DeliverCallback that arrives after a refill already took its
	// record (and delivered it, or left it to wait for a retry) carries the
	// first decided copy, with no attempts and a past NextAttemptAt.
	cur, err := cfg.Store.Get(rec.ID)
	if err != nil {
		return &CallbackAttempted{Record: rec, Err: err}
	}
	if cur.State != session.StateDecided || cur.NextAttemptAt.After(cfg.now()) {
		c.e.idleAttempts.Add(1)
		return &CallbackAttempted{Record: cur} // nothing to send now
	}
	// Its outcome could not be stored: do not send (a callback whose
	// attempt is not recorded would be sent again and again). The record
	// stays as it is; the rescan after the store recovers takes it back.
	if err := cfg.Store.Writable(); err != nil {
		return &CallbackAttempted{Record: cur, Err: err}
	}
	rec = cur
	start := cfg.now()
	res := cfg.Deliver(start.Add(cfg.CallbackTimeout), rec.ID, rec.Request, rec.Status)
	at := cfg.now().UTC()

	policy := schedule.Policy{Delays: cfg.CallbackSchedule, MaxAttempts: cfg.CallbackMaxAttempts, MaxAge: cfg.CallbackMaxAge}
	next := policy.Next(roundStart(rec), roundAttempt(rec), schedule.Outcome{Delivered: res.Err == nil,
		StatusCode: res.StatusCode, RetryAfter: res.RetryAfter, Final: !res.Retryable}, at, rand.Float64())
	a := persistence.Attempt{At: at, Outcome: session.StateDelivered, StatusCode: res.StatusCode, Took: at.Sub(start),
		Response: res.Response}
	switch next.Verdict {
	case schedule.Retry:
		a.Outcome, a.NextAt = session.StateDecided, next.At
	case schedule.Failed:
		a.Outcome = session.StateFailed
	}
	if res.Err != nil {
		if a.Err = res.Err.Error(); next.Why != "" {
			a.Err += " (giving up: " + next.Why + ")"
		}
	}
	stored, err := cfg.Store.RecordAttempt(rec.ID, a)
	if err != nil {
		return &CallbackAttempted{Record: rec, Err: err}
	}
	c.report(stored, a, at.Sub(start))
	return &CallbackAttempted{Record: stored}
}

// report logs an attempt and tells the observer.
func (c *callbackSender) report(rec session.Record, a persistence.Attempt, took time.Duration) {
	// A delivery is the common case: one line per request is too many at
	// info.
	result, level, msg := "retry", slog.LevelInfo, "callback attempt failed"
	switch a.Outcome {
	case session.StateDelivered:
		result, level, msg = "delivered", slog.LevelDebug, "callback delivered"
	case session.StateFailed:
		result, level, msg = "failed", slog.LevelWarn, "callback failed for good"
	}
	if obs := c.e.cfg.Observe.CallbackAttempt; obs != nil {
		obs(result, took)
	}
	if ctx := context.Background(); c.log.Enabled(ctx, level) {
		attrs := []slog.Attr{slog.String("request_id", rec.ID), slog.Int("attempt", rec.CallbackAttempts),
			slog.Float64("took_ms", float64(took.Microseconds())/1000)}
		if a.Err != "" {
			attrs = append(attrs, slog.String("err", a.Err))
		}
		if a.Outcome == session.StateDecided {
			attrs = append(attrs, slog.Time("next_attempt_at", a.NextAt))
		}
		c.log.LogAttrs(ctx, level, msg, attrs...)
	}
}

// roundAttempt is the number, within its round, of the attempt about to be
// made on rec (1: the round's first). The record counts every attempt; a
// redelivery starts a round, and the schedule from its beginning.
func roundAttempt(rec session.Record) int {
	return rec.CallbackAttempts - rec.RoundStartAttempts + 1
}

// roundStart is when the current round of attempts began: the decision, or
// the operator's last redelivery. --callback-max-age counts from it.
func roundStart(rec session.Record) time.Time {
	if rec.RedeliveredAt.After(rec.DecidedAt) {
		return rec.RedeliveredAt
	}
	return rec.DecidedAt
}

// hostOf is the receiver a callback URL names (lowercased host:port).
func hostOf(callbackURL string) string {
	u, err := url.Parse(callbackURL)
	if err != nil {
		return callbackURL
	}
	return strings.ToLower(u.Host)
}
