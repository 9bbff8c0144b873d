package persistence

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/chargeauth/chargeauth/session"
)

// Expire deletes up to limit delivered and failed records that finished
// (DeliveredAt or FailedAt) before the given time, with their index entries,
// and returns how many it deleted. Pending and decided records are never
// deleted. Deletions are committed without fsync: one lost to a crash is
// deleted again by the next call.
//
// Records are visited oldest first by id; the scan of a state stops at the
// first record accepted at or after before, since none after it can have
// finished earlier. Each deletion re-reads its record under the id's stripe
// lock, so a record redelivered meanwhile is kept.
func (s *Store) Expire(before time.Time, limit int) (_ int, err error) {
	defer func() { s.countFailure(err) }()
	if limit <= 0 {
		limit = 1000
	}
	var ids []string
	for _, st := range []session.State{session.StateDelivered, session.StateFailed} {
		err := s.Scan(st, "", 0, func(r session.Record) bool {
			if !r.AcceptedAt.Before(before) {
				return false
			}
			if finishedAt(r).Before(before) {
				ids = append(ids, r.ID)
			}
			return len(ids) < limit
		})
		if err != nil {
			return 0, err
		}
		if len(ids) >= limit {
			break
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}

	if err := s.wlock(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	// Hold the stripes of every id until the batch is committed, so that no
	// transition (a Redeliver) slips in between the check and the delete.
	// Stripes are taken in ascending order; Expire is the only caller that
	// holds more than one.
	var held [numStripes]bool
	for _, id := range ids {
		held[fnv32a(id)%numStripes] = true
	}
	for i := range held {
		if held[i] {
			s.mu.ids[i].Lock()
			defer s.mu.ids[i].Unlock()
		}
	}
	// (Only this function holds several stripes at once, in index order;
	// it is called from one goroutine.)

	b := s.db.NewBatch()
	defer b.Close()
	var kb [64]byte
	var removed [numStates]int64
	n := 0
	for _, id := range ids {
		r, err := s.getRLocked(s.db, id)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("persistence: expire %s: %w", id, err)
		}
		if r.State != session.StateDelivered && r.State != session.StateFailed || !finishedAt(r).Before(before) {
			continue
		}
		if err := b.Delete(recordKey(kb[:0], id), nil); err != nil {
			return 0, fmt.Errorf("persistence: expire %s: %w", id, err)
		}
		if err := b.Delete(indexKey(kb[:0], r.State, id), nil); err != nil {
			return 0, fmt.Errorf("persistence: expire %s: %w", id, err)
		}
		removed[stateIndex(r.State)]++
		n++
	}
	if err := s.commit(b, pebble.NoSync); err != nil {
		return 0, fmt.Errorf("persistence: expire: %w", err)
	}
	for i, k := range removed {
		s.counts[i].Add(-k)
	}
	return n, nil
}

func finishedAt(r session.Record) time.Time {
	if r.State == session.StateDelivered {
		return r.DeliveredAt
	}
	return r.FailedAt
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
