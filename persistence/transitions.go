package persistence

import (
	"errors"
	"fmt"
	"time"

	"github.com/chargeauth/chargeauth/session"
	"github.com/cockroachdb/pebble/v2"
)

// Accept durably writes a new request: the record and its s/pending/ index
// entry, in one batch committed with pebble.Sync. rec.ID must be set and
// rec.State must be pending.
//
// Accept takes no per-id lock and does not read before writing: the caller
// guarantees the id is new (a UUIDv7). Many goroutines may call it at once,
// and should: the accepts that arrive while one commit is in flight are
// written together by the next, in one batch and one fsync (see committer).
//
// It returns ErrClosing after Close and an error wrapping ErrDiskFull when
// free space is below Config.MinFreeDisk, in both cases without touching
// Pebble.
func (s *Store) Accept(rec *session.Record) (err error) {
	defer func() { s.countFailure(err) }()
	if rec == nil || rec.ID == "" {
		return errors.New("persistence: accept: record without an id")
	}
	if rec.State != session.StatePending {
		return fmt.Errorf("%w: accept %s in state %q, want %q",
			ErrWrongState, rec.ID, rec.State, session.StatePending)
	}
	w := pendingWrites.Get().(*pendingWrite)
	defer pendingWrites.Put(w)
	v, err := encodeRecord(w.value[:0], rec)
	if err != nil {
		return err
	}
	if err := s.wlock(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := s.brokenErr(); err != nil {
		return err // it broke while this Accept waited for the lock
	}
	if err := s.disk.check(); err != nil {
		return err
	}

	w.key = recordKey(w.key[:0], rec.ID)
	w.index = indexKey(w.index[:0], session.StatePending, rec.ID)
	w.value = v
	if err := s.committer.write(w); err != nil {
		if errors.Is(err, ErrUnavailable) {
			s.forgetOnRecover(rec.ID)
		}
		return fmt.Errorf("persistence: accept %s: %w", rec.ID, err)
	}
	s.counts[stateIndex(session.StatePending)].Add(1)
	return nil
}

// Decide is the compare-and-set pending -> decided: it records the decision
// (Status, Reason, DecidedBy, DecidedAt = at) and schedules the first callback
// attempt (NextAttemptAt = at). Of two concurrent Decides on one id exactly
// one succeeds; the other gets the winner's record and an error wrapping
// ErrWrongState. Likewise for a record that is not pending.
func (s *Store) Decide(id string, status session.Status, reason string, by session.DecidedBy, at time.Time) (session.Record, error) {
	return s.decide(id, nil, status, reason, by, at)
}

// DecideOwned is Decide for the owner of a pending record, who holds it as
// stored: it writes the transition from cur without reading the record
// back. The caller guarantees that nothing else writes the record
// meanwhile (the request actor is the only one to decide its request, and
// the supervisor keeps one per id); the state check is on cur.
func (s *Store) DecideOwned(cur *session.Record, status session.Status, reason string, by session.DecidedBy, at time.Time) (session.Record, error) {
	if cur == nil || cur.ID == "" {
		return session.Record{}, errors.New("persistence: decide: record without an id")
	}
	return s.decide(cur.ID, cur, status, reason, by, at)
}

func (s *Store) decide(id string, known *session.Record, status session.Status, reason string, by session.DecidedBy, at time.Time) (session.Record, error) {
	if !status.Valid() {
		return session.Record{}, fmt.Errorf("persistence: decide %s: invalid status %q", id, status)
	}
	if by != session.ByAuthz && by != session.ByTimeout {
		return session.Record{}, fmt.Errorf("persistence: decide %s: invalid decided_by %q", id, by)
	}
	return s.transitionFrom("decide", id, known, true, func(r *session.Record) error {
		if r.State != session.StatePending {
			return wrongState(r, session.StatePending)
		}
		r.State = session.StateDecided
		r.Status, r.Reason, r.DecidedBy, r.DecidedAt = status, reason, by, at
		r.NextAttemptAt = at
		return nil
	})
}

// Attempt is the outcome of one callback attempt.
type Attempt struct {
	// At is when the attempt ended.
	At time.Time
	// Err describes the failure; "" on success.
	Err string
	// Outcome is the state after the attempt: StateDecided (retry at
	// NextAt), StateDelivered or StateFailed (out of attempts).
	Outcome session.State
	// NextAt is when to retry; used only with Outcome StateDecided.
	NextAt time.Time
	// StatusCode is the receiver's HTTP status (0: none arrived) and
	// Took the attempt's duration, both kept in the record's attempt log.
	StatusCode int
	Took       time.Duration
	// Response is the start of the receiver's response body, kept in the
	// attempt log; cut to session.MaxResponseLog bytes if longer.
	Response string
}

// RecordAttempt records one callback attempt on a decided record:
// CallbackAttempts++, LastError = a.Err, and by a.Outcome: decided ->
// NextAttemptAt = a.NextAt; delivered -> DeliveredAt = a.At; failed ->
// FailedAt = a.At. A record that is not decided is returned unchanged with an
// error wrapping ErrWrongState.
//
// A failed or retry outcome waits for its fsync, so that a restart
// continues the schedule from it. A delivered outcome does not: lost in a
// crash, it leaves the record decided, and its callback is sent once more
// (delivery is at least once, and receivers dedupe on webhook-id). An
// unsynced write is not safe from a process crash either: Pebble keeps it
// in its own buffer until the next synced write, so unsynced retries could
// each be lost and made again.
func (s *Store) RecordAttempt(id string, a Attempt) (session.Record, error) {
	switch a.Outcome {
	case session.StateDecided, session.StateDelivered, session.StateFailed:
	default:
		return session.Record{}, fmt.Errorf("persistence: attempt %s: invalid outcome %q", id, a.Outcome)
	}
	return s.transition("attempt", id, a.Outcome != session.StateDelivered, func(r *session.Record) error {
		if r.State != session.StateDecided {
			return wrongState(r, session.StateDecided)
		}
		r.CallbackAttempts++
		r.LastError = a.Err
		resp := a.Response
		if len(resp) > session.MaxResponseLog {
			resp = resp[:session.MaxResponseLog]
		}
		r.Attempts = append(r.Attempts, session.AttemptLog{
			At: a.At, StatusCode: a.StatusCode, Error: a.Err, DurationMS: float64(a.Took.Microseconds()) / 1000,
			Response: resp,
		})
		if n := len(r.Attempts); n > session.MaxAttemptLog {
			r.Attempts = append(r.Attempts[:0:0], r.Attempts[n-session.MaxAttemptLog:]...)
		}
		r.State = a.Outcome
		switch a.Outcome {
		case session.StateDecided:
			r.NextAttemptAt = a.NextAt
		case session.StateDelivered:
			r.DeliveredAt = a.At
			r.NextAttemptAt = time.Time{}
		case session.StateFailed:
			r.FailedAt = a.At
			r.NextAttemptAt = time.Time{}
		}
		return nil
	})
}

// Redeliver moves a failed record back to decided for another round of
// callback attempts, and keeps its history: NextAttemptAt = at,
// RedeliveredAt = at, RoundStartAttempts = CallbackAttempts (the count goes
// on; the schedule starts again from its beginning), and the failure it
// ends is appended to Redeliveries (the last session.MaxRedeliveryLog are
// kept) before FailedAt is cleared. LastError and the attempt log are
// kept. A record that is not failed is returned unchanged with an error
// wrapping ErrWrongState.
func (s *Store) Redeliver(id string, at time.Time) (session.Record, error) {
	return s.transition("redeliver", id, true, func(r *session.Record) error {
		if r.State != session.StateFailed {
			return wrongState(r, session.StateFailed)
		}
		r.State = session.StateDecided
		r.NextAttemptAt = at
		r.RoundStartAttempts = r.CallbackAttempts
		// A fresh slice: r shares its array with the record as read.
		keep := r.Redeliveries[max(0, len(r.Redeliveries)-(session.MaxRedeliveryLog-1)):]
		r.Redeliveries = append(append(make([]session.Redelivery, 0, len(keep)+1), keep...),
			session.Redelivery{FailedAt: r.FailedAt, At: at})
		r.FailedAt = time.Time{}
		r.RedeliveredAt = at
		return nil
	})
}

// moveDue keeps the due index in step with a transition from cur to next:
// a decided record has one d/ entry, at its NextAttemptAt.
func moveDue(b *pebble.Batch, cur, next *session.Record) error {
	was, is := cur.State == session.StateDecided, next.State == session.StateDecided
	if was && is && cur.NextAttemptAt.Equal(next.NextAttemptAt) {
		return nil
	}
	var kb [64]byte
	if was {
		if err := b.Delete(dueKey(kb[:0], cur.NextAttemptAt, cur.ID), nil); err != nil {
			return err
		}
	}
	if is {
		return b.Set(dueKey(kb[:0], next.NextAttemptAt, next.ID), nil, nil)
	}
	return nil
}

func wrongState(r *session.Record, want session.State) error {
	return fmt.Errorf("%w: %s is %s, want %s", ErrWrongState, r.ID, r.State, want)
}

// transition is read-check-write on one record under its id's stripe lock.
// apply changes a copy of the record or returns an error (then the current
// record is returned with it, unchanged). The record and, if the state
// changed, its index entry are written in one batch. If durable, transition
// returns once the batch is on disk; the fsync is waited for after the
// stripe lock is released, so that one id's fsync never holds up another
// id's read-check-write. Otherwise the batch is durable with the next
// synced write (within milliseconds under load), and a crash before that
// loses it.
func (s *Store) transition(op, id string, durable bool, apply func(*session.Record) error) (session.Record, error) {
	return s.transitionFrom(op, id, nil, durable, apply)
}

// transitionFrom is transition from known, the record as stored, if set:
// it is not read back.
func (s *Store) transitionFrom(op, id string, known *session.Record, durable bool, apply func(*session.Record) error) (_ session.Record, err error) {
	defer func() { s.countFailure(err) }()
	if err := s.wlock(); err != nil {
		return session.Record{}, err
	}
	defer s.mu.RUnlock()
	cur, next, err := s.writeLocked(op, id, known, apply)
	if err != nil {
		return cur, err
	}
	if durable {
		// Outside the id's lock: the fsync is shared with every other
		// writer, and the next transition of a neighbouring id need not
		// wait for it.
		if err := s.syncRLocked(); err != nil {
			return cur, fmt.Errorf("persistence: %s %s: %w", op, id, err)
		}
	}
	return next, nil
}

// writeLocked is transition's read-check-write under the id's stripe lock
// (check-write from known, if set). The write is visible when it returns,
// not yet durable, and the counts follow it. On error, cur is the record as
// stored (if it was read) and nothing was written.
func (s *Store) writeLocked(op, id string, known *session.Record, apply func(*session.Record) error) (cur, next session.Record, err error) {
	m := s.stripeFor(id)
	m.Lock()
	defer m.Unlock()

	if known != nil {
		cur = *known
	} else if cur, err = s.getRLocked(s.db, id); err != nil {
		return session.Record{}, session.Record{}, err
	}
	next = cur
	if err := apply(&next); err != nil {
		return cur, next, err
	}
	v, err := encodeRecord(make([]byte, 0, recordRoom), &next)
	if err != nil {
		return cur, next, err
	}
	var kb [64]byte
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(recordKey(kb[:0], id), v, nil); err != nil {
		return cur, next, fmt.Errorf("persistence: %s %s: %w", op, id, err)
	}
	if next.State != cur.State {
		if err := b.Delete(indexKey(kb[:0], cur.State, id), nil); err != nil {
			return cur, next, fmt.Errorf("persistence: %s %s: %w", op, id, err)
		}
		if err := b.Set(indexKey(kb[:0], next.State, id), nil, nil); err != nil {
			return cur, next, fmt.Errorf("persistence: %s %s: %w", op, id, err)
		}
	}
	if err := moveDue(b, &cur, &next); err != nil {
		return cur, next, fmt.Errorf("persistence: %s %s: %w", op, id, err)
	}
	if err := s.commit(b, pebble.NoSync); err != nil {
		return cur, next, fmt.Errorf("persistence: %s %s: %w", op, id, err)
	}
	if next.State != cur.State {
		if i := stateIndex(cur.State); i >= 0 {
			s.counts[i].Add(-1)
		}
		s.counts[stateIndex(next.State)].Add(1)
	}
	return cur, next, nil
}
