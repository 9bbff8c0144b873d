package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/chargeauth/chargeauth/session"
)

// Idempotency keys (the Idempotency-Key header of a POST). Key layout, see
// also doc.go:
//
//	k/<key>        -> idemV1 | taken at (8 bytes, big-endian Unix nanos)
//	                  | SHA-256 of the request (32 bytes) | request id
//	kt/<at><key>   -> empty: the keys by the time they were taken, so that
//	                  ExpireIdempotencyKeys reads the oldest first and stops
//	                  at the first still live
//
// Both are written in the batch that accepts the request (AcceptIdempotent),
// so a key is durable exactly when its 202 is. A key whose request is gone
// (its Accept failed and the record was dropped on recovery) counts as
// free.
const (
	idemPrefix     = "k/"
	idemTimePrefix = "kt/"
	idemV1         = 1
	idemHeader     = 1 + 8 + 32
)

// ErrIdempotencyMismatch: the key was taken by an earlier request with a
// different body; nothing was written.
var ErrIdempotencyMismatch = errors.New("persistence: idempotency key used by a different request")

// idemStripes serialise the check-then-write of one key: two concurrent
// accepts with one key must not both find it free. Lock order: Store.mu
// read lock, then one idemStripe (never together with an id stripe).
// Package-wide, shared by every Store: contention between stores is
// harmless.
var idemStripes [numStripes]stripe

// Idempotency is a request's Idempotency-Key and what identifies its body.
type Idempotency struct {
	Key  string
	Hash [32]byte // SHA-256 of the request (the caller decides its form)
	TTL  time.Duration
}

// AcceptIdempotent is Accept with an idempotency key: if the key was taken
// by a request accepted less than idem.TTL before rec.AcceptedAt, and that
// request is still stored, nothing is written and it returns that request's
// record with replayed true — or, when the earlier request's hash differs,
// that record and ErrIdempotencyMismatch. Otherwise rec is accepted as by
// Accept, and the key (taken at rec.AcceptedAt) in the same batch and the
// same fsync.
func (s *Store) AcceptIdempotent(rec *session.Record, idem Idempotency) (prior session.Record, replayed bool, err error) {
	if rec == nil || rec.ID == "" {
		return prior, false, errors.New("persistence: accept: record without an id")
	}
	if rec.State != session.StatePending {
		return prior, false, fmt.Errorf("%w: accept %s in state %q, want %q",
			ErrWrongState, rec.ID, rec.State, session.StatePending)
	}
	if idem.Key == "" {
		return prior, false, errors.New("persistence: accept: empty idempotency key")
	}
	w := pendingWrites.Get().(*pendingWrite)
	defer func() {
		w.idemKey, w.idemValue, w.idemTimeKey = w.idemKey[:0], w.idemValue[:0], w.idemTimeKey[:0]
		pendingWrites.Put(w)
	}()
	v, err := encodeRecord(w.value[:0], rec)
	if err != nil {
		return prior, false, err
	}
	if err := s.rlock(); err != nil {
		return prior, false, err
	}
	defer s.mu.RUnlock()
	m := &idemStripes[fnv32a(idem.Key)%numStripes]
	m.Lock()
	defer m.Unlock()

	w.idemKey = append(append(w.idemKey[:0], idemPrefix...), idem.Key...)
	at, hash, id, found, err := s.readIdemRLocked(w.idemKey)
	if err != nil {
		return prior, false, err
	}
	if found && rec.AcceptedAt.Before(at.Add(idem.TTL)) {
		prior, err = s.getRLocked(s.db, id)
		switch {
		case err == nil && hash == idem.Hash:
			return prior, true, nil
		case err == nil:
			return prior, false, fmt.Errorf("%w: %s", ErrIdempotencyMismatch, id)
		case !errors.Is(err, ErrNotFound):
			return session.Record{}, false, err
		}
		// The earlier request is gone: the key is free.
	}
	if err := s.disk.check(); err != nil {
		return prior, false, err
	}
	w.key = recordKey(w.key[:0], rec.ID)
	w.index = indexKey(w.index[:0], session.StatePending, rec.ID)
	w.value = v
	w.idemValue = append(w.idemValue[:0], idemV1)
	w.idemValue = binary.BigEndian.AppendUint64(w.idemValue, dueNanos(rec.AcceptedAt))
	w.idemValue = append(w.idemValue, idem.Hash[:]...)
	w.idemValue = append(w.idemValue, rec.ID...)
	w.idemTimeKey = idemTimeKey(w.idemTimeKey[:0], rec.AcceptedAt, idem.Key)
	if err := s.committer.write(w); err != nil {
		if errors.Is(err, ErrUnavailable) {
			s.forgetOnRecover(rec.ID)
		}
		return session.Record{}, false, fmt.Errorf("persistence: accept %s: %w", rec.ID, err)
	}
	s.counts[stateIndex(session.StatePending)].Add(1)
	return session.Record{}, false, nil
}

func idemTimeKey(buf []byte, at time.Time, key string) []byte {
	buf = append(buf, idemTimePrefix...)
	buf = binary.BigEndian.AppendUint64(buf, dueNanos(at))
	return append(buf, key...)
}

// readIdemRLocked reads k/<key>. The caller holds the read lock.
func (s *Store) readIdemRLocked(k []byte) (at time.Time, hash [32]byte, id string, found bool, err error) {
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return at, hash, "", false, nil
	}
	if err != nil {
		return at, hash, "", false, fmt.Errorf("persistence: idempotency key: %w", err)
	}
	defer closer.Close()
	if len(v) <= idemHeader || v[0] != idemV1 {
		return at, hash, "", false, fmt.Errorf("%w: idempotency key: bad value", errCorrupt)
	}
	at = time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))).UTC()
	copy(hash[:], v[9:idemHeader])
	return at, hash, string(v[idemHeader:]), true, nil
}

// ExpireIdempotencyKeys deletes up to limit keys taken before the given
// time, oldest first, and returns how many it deleted. A key taken again
// since (after it had expired) is kept. Deletions are not synced: one lost
// to a crash is deleted by the next call, and an expired key is free
// whether deleted or not.
func (s *Store) ExpireIdempotencyKeys(before time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = 1000
	}
	if err := s.rlock(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	type entry struct {
		timeKey []byte
		key     string
		at      uint64
	}
	var entries []entry
	err := func() error {
		it, err := s.db.NewIter(&pebble.IterOptions{
			LowerBound: []byte(idemTimePrefix),
			UpperBound: idemTimeKey(nil, before, ""),
		})
		if err != nil {
			return err
		}
		defer it.Close()
		for ok := it.First(); ok && len(entries) < limit; ok = it.Next() {
			k := it.Key()
			if len(k) < len(idemTimePrefix)+8 {
				continue
			}
			entries = append(entries, entry{
				timeKey: bytes.Clone(k),
				at:      binary.BigEndian.Uint64(k[len(idemTimePrefix):]),
				key:     string(k[len(idemTimePrefix)+8:]),
			})
		}
		return it.Error()
	}()
	if err != nil {
		return 0, fmt.Errorf("persistence: expire idempotency keys: %w", err)
	}
	if len(entries) == 0 {
		return 0, nil
	}
	// Hold the stripes of every key, in ascending order, until the batch
	// is committed: no AcceptIdempotent takes one of them meanwhile.
	var held [numStripes]bool
	for _, e := range entries {
		held[fnv32a(e.key)%numStripes] = true
	}
	for i := range held {
		if held[i] {
			idemStripes[i].Lock()
			defer idemStripes[i].Unlock()
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	n := 0
	for _, e := range entries {
		k := append([]byte(idemPrefix), e.key...)
		at, _, _, found, err := s.readIdemRLocked(k)
		if err != nil && !errors.Is(err, errCorrupt) {
			return 0, err
		}
		if found && dueNanos(at) == e.at || errors.Is(err, errCorrupt) {
			if err := b.Delete(k, nil); err != nil {
				return 0, err
			}
			n++
		}
		if err := b.Delete(e.timeKey, nil); err != nil {
			return 0, err
		}
	}
	if err := s.commit(b, pebble.NoSync); err != nil {
		return 0, fmt.Errorf("persistence: expire idempotency keys: %w", err)
	}
	return n, nil
}
