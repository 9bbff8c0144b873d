package actors

import (
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/chargeauth/chargeauth/session"
)

// supervisor spawns one request actor per accepted request and keeps at most
// MaxInflight of them alive. When it is full, accepted requests wait in the
// store (backlog mode): as request actors stop, it scans the pending index
// oldest first and admits those that are not live yet.
//
// Invariant: every pending request that is neither live nor announced by an
// *Accepted still in the mailbox has an id > scanAfter, and backlog is true.
type supervisor struct {
	e   *Engine
	log *slog.Logger

	live map[string]struct{}

	backlog   bool
	scanAfter string // every waiting id is above it ("" = from the start)
	// scanMax is the greatest id a scan has admitted: an *Accepted still in
	// the mailbox at or below it may name a request a scan admitted, and
	// that may even be decided already.
	scanMax string
}

// refillBatches: a stopping request actor starts a refill once
// MaxInflight/refillBatches slots (at least one) are free.
const refillBatches = 100

func newSupervisor(e *Engine) *supervisor {
	return &supervisor{
		e:    e,
		log:  e.log.With("actor", "supervisor"),
		live: make(map[string]struct{}),
	}
}

func (s *supervisor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		// A restart (after a panic) loses the live set: rebuild it from
		// the children, and rescan the pending index from the start.
		clear(s.live)
		for _, pid := range ctx.Children() {
			s.live[pid.Id[len(ctx.Self().Id)+1:]] = struct{}{}
		}
		s.e.live.Store(int64(len(s.live)))
		s.backlog, s.scanAfter = true, ""
		if err := s.refill(ctx); err != nil {
			s.log.Error("scan of pending requests failed", "err", err)
		}
	case *resume:
		s.backlog, s.scanAfter = true, ""
		err := s.refill(ctx)
		if ctx.Sender() != nil {
			ctx.Respond(&resumed{err: err})
		} else if err != nil {
			s.log.Error("rescan of pending requests failed", "err", err)
		}
	case *Accepted:
		s.admit(ctx, msg.Record)
	case *paceTick:
		if s.backlog {
			if err := s.refill(ctx); err != nil {
				s.log.Error("backlog scan failed", "err", err)
			}
		}
	case *actor.Terminated:
		delete(s.live, msg.Who.Id[len(ctx.Self().Id)+1:])
		s.e.live.Store(int64(len(s.live)))
		// Refill once a batch of slots is free, not on every stop: each
		// refill is a scan (a snapshot and two iterators).
		if s.backlog && s.e.cfg.MaxInflight-len(s.live) >= max(1, s.e.cfg.MaxInflight/refillBatches) {
			if err := s.refill(ctx); err != nil {
				s.log.Error("backlog scan failed", "err", err)
			}
		}
	case *actor.Stopping, *actor.Stopped, *actor.Restarting:
	default:
		s.log.Debug("unexpected message", "type", typeName(msg))
	}
}

func (s *supervisor) admit(ctx actor.Context, rec session.Record) {
	id := rec.ID
	if _, ok := s.live[id]; ok {
		return // a backlog scan already admitted it
	}
	if !s.backlog && len(s.live) < s.e.cfg.MaxInflight && !s.e.stopping() && s.e.admit() && s.spawn(ctx, rec, id <= s.scanMax) {
		return
	}
	// id <= scanAfter is before(id) < scanAfter (ids have one length),
	// without building a string for every request that waits.
	if !s.backlog || id <= s.scanAfter {
		s.scanAfter = before(id)
	}
	s.backlog = true
}

// refill admits waiting requests from the store, oldest first, until the
// live set is full; it leaves backlog mode when the store has no more. It
// reads only what it admits (plus live requests it meets and one more to
// see whether any are left), in pages of free+1, so an actor stopping
// costs a couple of reads however many are live or waiting.
func (s *supervisor) refill(ctx actor.Context) error {
	if s.e.stopping() {
		return nil
	}
	// Paced (yield.go), it admits what the tick allows.
	free := s.e.admissible(s.e.cfg.MaxInflight - len(s.live))
	for free > 0 {
		limit := free + 1
		seen, more := 0, false
		err := s.e.cfg.Store.Scan(session.StatePending, s.scanAfter, limit, func(rec session.Record) bool {
			seen++
			if _, ok := s.live[rec.ID]; ok {
				s.scanAfter = rec.ID
				return true
			}
			if free == 0 {
				more = true // it stays waiting; scanAfter is just before it
				return false
			}
			// Read from a snapshot taken now, it is pending, and no actor
			// of it is live: no need to look again.
			if !s.spawn(ctx, rec, false) {
				more = true // leave it waiting; the next refill tries again
				return false
			}
			s.scanAfter = rec.ID
			s.scanMax = max(s.scanMax, rec.ID)
			free--
			s.e.admit()
			return true
		})
		if err != nil {
			return err
		}
		if more {
			return nil
		}
		if seen < limit {
			s.backlog, s.scanAfter = false, "" // the store has no more
			return nil
		}
		// A full page of live or admitted requests: read on if room is left.
	}
	return nil
}

// spawn starts the request actor of rec; check makes it look in the store
// first, for a request that may be decided already.
func (s *supervisor) spawn(ctx actor.Context, rec session.Record, check bool) bool {
	props := s.e.props(func() actor.Actor { return newRequestActor(s.e, rec, check) })
	if _, err := ctx.SpawnNamed(props, rec.ID); err != nil {
		s.log.Error("spawn request actor", "request_id", rec.ID, "err", err)
		return false
	}
	s.live[rec.ID] = struct{}{}
	s.e.live.Store(int64(len(s.live)))
	return true
}

// before returns the greatest string below id of the same length (ids all
// have one length), so that a scan after before(id) starts at id itself.
func before(id string) string {
	if id == "" {
		return ""
	}
	b := []byte(id)
	b[len(b)-1]--
	return string(b)
}
