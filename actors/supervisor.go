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
// *Accepted still in the mailbox has an id >= scanFrom, and backlog is true.
type supervisor struct {
	e   *Engine
	log *slog.Logger

	live map[string]struct{}

	backlog  bool
	scanFrom string // lowest id that may wait in the store ("" = from the start)
	scanned  bool   // a backlog scan has run: an *Accepted may repeat a request it admitted
}

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
		// the children and rescan the whole pending index.
		clear(s.live)
		for _, pid := range ctx.Children() {
			s.live[pid.Id[len(ctx.Self().Id)+1:]] = struct{}{}
		}
		s.e.live.Store(int64(len(s.live)))
	case *resume:
		s.backlog, s.scanFrom = true, ""
		err := s.refill(ctx)
		if ctx.Sender() != nil {
			ctx.Respond(&resumed{err: err})
		} else if err != nil {
			s.log.Error("rescan of pending requests failed", "err", err)
		}
	case *Accepted:
		s.admit(ctx, msg.Record)
	case *actor.Terminated:
		delete(s.live, msg.Who.Id[len(ctx.Self().Id)+1:])
		s.e.live.Store(int64(len(s.live)))
		if s.backlog {
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
	if !s.backlog && len(s.live) < s.e.cfg.MaxInflight && !s.e.stopping() {
		s.spawn(ctx, rec)
		return
	}
	if !s.backlog || id < s.scanFrom {
		s.scanFrom = id
	}
	s.backlog = true
}

// refill admits waiting requests from the store, oldest first, until the
// live set is full; it leaves backlog mode when the store has no more.
func (s *supervisor) refill(ctx actor.Context) error {
	if s.e.stopping() {
		return nil
	}
	free := s.e.cfg.MaxInflight - len(s.live)
	if free <= 0 {
		return nil
	}
	after := before(s.scanFrom)
	exhausted := true
	// Live requests are pending too and are skipped: the limit covers them,
	// plus one more to learn whether the backlog is exhausted.
	limit := free + len(s.live) + 1
	seen := 0
	err := s.e.cfg.Store.Scan(session.StatePending, after, limit, func(rec session.Record) bool {
		seen++
		s.scanned = true
		if _, ok := s.live[rec.ID]; ok {
			return true
		}
		if free == 0 {
			s.scanFrom = rec.ID
			exhausted = false
			return false
		}
		s.spawn(ctx, rec)
		free--
		return true
	})
	if err != nil {
		return err
	}
	if exhausted && seen == limit {
		// The scan stopped at its limit, not at the end: look again from
		// here next time.
		exhausted = false
	}
	if exhausted {
		s.backlog, s.scanFrom = false, ""
	}
	return nil
}

func (s *supervisor) spawn(ctx actor.Context, rec session.Record) {
	// Once a scan has admitted requests, an *Accepted still in the mailbox
	// may name one that was admitted and even decided already: such an actor
	// first checks the store.
	check := s.scanned
	props := actor.PropsFromProducer(func() actor.Actor { return newRequestActor(s.e, rec, check) })
	if _, err := ctx.SpawnNamed(props, rec.ID); err != nil {
		s.log.Error("spawn request actor", "request_id", rec.ID, "err", err)
		return
	}
	s.live[rec.ID] = struct{}{}
	s.e.live.Store(int64(len(s.live)))
}

// before returns the greatest string below id of the same length, so that a
// scan "after before(id)" starts at id itself. "" stays "".
func before(id string) string {
	if id == "" {
		return ""
	}
	b := []byte(id)
	b[len(b)-1]--
	return string(b)
}
