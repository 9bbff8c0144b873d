package actors

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// requestActor decides one request: it asks the authz pool, retries failed
// calls while the deadline allows, and decides unknown when the deadline
// comes first.
//
// The deadline is a plain timer (a sendTimer, stopped with the actor) that
// sends *deadlinePassed, not protoactor's receive timeout: that one slides
// with every ordinary message, and (in the version we build with) its timer
// goroutine writes the context's timeout field while the mailbox goroutine
// reads it, which `go test -race` reports.
// Every message the actor may get before deciding still implements
// NotInfluenceReceiveTimeout, so nothing changes if a receive timeout is
// ever used again.
type requestActor struct {
	e   *Engine
	rec session.Record

	calls    int   // calls asked of the pool
	lastErr  error // why the last call gave no answer
	deadline sendTimer
	retry    sendTimer // armed after a failed call
	done     bool

	checkStore bool // it may be decided already: look before asking
}

func newRequestActor(e *Engine, rec session.Record, checkStore bool) *requestActor {
	return &requestActor{e: e, rec: rec, checkStore: checkStore}
}

func (r *requestActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		if r.checkStore {
			cur, err := r.e.cfg.Store.Get(r.rec.ID)
			if err != nil || cur.State != session.StatePending {
				r.done = true
				r.e.decidedTotal.Add(1)
				ctx.Stop(ctx.Self())
				return
			}
			r.rec = cur // the record as stored, which decide writes from
		}
		// Runs again after a restart (with fresh state): recompute.
		left := r.rec.DecideBy.Sub(r.e.cfg.now())
		if left <= 0 {
			r.decide(ctx, session.StatusUnknown, "timeout", session.ByTimeout)
			return
		}
		r.deadline.start(left, r.e.system.Root, ctx.Self(), &deadlinePassed{})
		r.ask(ctx)
	case *AuthzAnswered:
		if r.done {
			return
		}
		if msg.Err == nil {
			r.decide(ctx, msg.Status, msg.Reason, session.ByAuthz)
			return
		}
		r.lastErr = msg.Err
		// Capped at the breaker's cooldown: once the service is back,
		// waiting requests try again within about that long.
		delay := r.e.authzRetries.After(r.calls, rand.Float64())
		if r.e.cfg.now().Add(delay).After(r.rec.DecideBy) {
			return // the deadline comes first
		}
		r.retry.start(delay, r.e.system.Root, ctx.Self(), &retryAuthorize{})
	case *retryAuthorize:
		if !r.done {
			r.ask(ctx)
		}
	case *deadlinePassed:
		reason := "timeout"
		if r.lastErr != nil {
			reason = "timeout: " + r.lastErr.Error()
		}
		r.decide(ctx, session.StatusUnknown, reason, session.ByTimeout)
	case *actor.Stopping, *actor.Restarting:
		// Stopped by Stop (or restarted after a panic) before deciding:
		// no timer of this actor outlives it.
		r.stopTimers()
	case *actor.Stopped:
	default:
		r.logger().Debug("unexpected message", "type", typeName(msg))
	}
}

func (r *requestActor) stopTimers() {
	r.deadline.stop()
	r.retry.stop()
}

func (r *requestActor) ask(ctx actor.Context) {
	r.calls++
	ctx.Request(r.e.pool, &Authorize{
		ID:          r.rec.ID,
		StationID:   r.rec.StationID,
		DriverToken: r.rec.DriverToken,
		Deadline:    r.rec.DecideBy,
	})
}

// decide makes the decision durable, and only then hands it to the
// callback sender. If the store already holds a decision (a late duplicate
// after a restart), it changes nothing and sends nothing.
func (r *requestActor) decide(ctx actor.Context, status session.Status, reason string, by session.DecidedBy) {
	if r.done {
		return
	}
	r.done = true
	r.e.decidedTotal.Add(1)
	r.stopTimers()
	defer ctx.Stop(ctx.Self())

	// The actor holds its record as stored, and is the only one to decide
	// it: the decision is written from it, without reading it back.
	rec, err := r.e.cfg.Store.DecideOwned(&r.rec, status, reason, by, r.e.cfg.now().UTC())
	switch {
	case errors.Is(err, persistence.ErrWrongState):
		r.logger().Debug("already decided", "state", rec.State)
		return
	case err != nil:
		// Still pending in the store: the next start (or the rescan after
		// the store recovers) decides it.
		if !errors.Is(err, persistence.ErrUnavailable) { // the store logs its fault, once a second
			r.logger().Error("persist decision", "err", err)
		}
		return
	}
	if r.e.log.Enabled(context.Background(), slog.LevelDebug) {
		r.logger().Debug("decided", "status", status, "decided_by", by, "reason", reason,
			"station_id", rec.StationID, "driver_token", session.MaskToken(rec.DriverToken))
	}
	if obs := r.e.cfg.Observe.Decided; obs != nil {
		obs(rec.Status, rec.DecidedBy, rec.DecidedAt.Sub(rec.AcceptedAt))
	}
	ctx.Send(r.e.sender, &DeliverCallback{Record: rec})
}

// logger is the engine's logger with this request's id. It is built when a
// line is written, not per request: most requests log nothing at Info.
func (r *requestActor) logger() *slog.Logger {
	return r.e.log.With("request_id", r.rec.ID)
}
