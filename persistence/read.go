package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/chargeauth/chargeauth/session"
	"github.com/cockroachdb/pebble/v2"
)

// scanPageSize is how many records Scan reads under the lock at a time.
const scanPageSize = 256

// Get returns the record of id, or an error wrapping ErrNotFound.
func (s *Store) Get(id string) (session.Record, error) {
	if err := s.rlock(); err != nil {
		return session.Record{}, err
	}
	defer s.mu.RUnlock()
	return s.getRLocked(s.db, id)
}

// getRLocked reads r/<id> from r. The caller holds s.mu.RLock.
func (s *Store) getRLocked(r pebble.Reader, id string) (session.Record, error) {
	var kb [64]byte
	v, closer, err := r.Get(recordKey(kb[:0], id))
	if errors.Is(err, pebble.ErrNotFound) {
		return session.Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return session.Record{}, fmt.Errorf("persistence: get %s: %w", id, err)
	}
	defer closer.Close()
	return decodeRecord(id, v)
}

// Scan calls fn with the records in state st, in ascending id order (oldest
// first), starting after afterID ("" = from the start), at most limit of them
// (<= 0: no limit), until fn returns false.
//
// Records are read in pages of scanPageSize, each from one consistent
// snapshot, and fn runs with no lock held, so it may call the store. A record
// that changes state during the scan may be missed or seen in its old state;
// none is seen twice.
func (s *Store) Scan(st session.State, afterID string, limit int, fn func(session.Record) bool) error {
	if stateIndex(st) < 0 {
		return fmt.Errorf("persistence: scan: invalid state %q", st)
	}
	var (
		page   []session.Record
		cursor = afterID
		n      int
		err    error
	)
	for {
		want := scanPageSize
		if limit > 0 && limit-n < want {
			want = limit - n
		}
		page, err = s.scanPage(page[:0], st, cursor, want)
		if err != nil {
			return err
		}
		for i := range page {
			n++
			if !fn(page[i]) {
				return nil
			}
		}
		if len(page) < want || (limit > 0 && n >= limit) {
			return nil
		}
		cursor = page[len(page)-1].ID
	}
}

// scanPage appends to page up to want records in state st with id > afterID.
func (s *Store) scanPage(page []session.Record, st session.State, afterID string, want int) ([]session.Record, error) {
	if err := s.rlock(); err != nil {
		return page, err
	}
	defer s.mu.RUnlock()
	snap := s.db.NewSnapshot()
	defer snap.Close()

	prefix := indexPrefix(nil, st)
	lower := prefix
	if afterID != "" {
		lower = idAfter(prefix, afterID)
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return page, fmt.Errorf("persistence: scan %s: %w", st, err)
	}
	recs, err := newRecordIter(snap)
	if err != nil {
		_ = it.Close()
		return page, fmt.Errorf("persistence: scan %s: %w", st, err)
	}
	var kb [64]byte
	for valid := it.First(); valid && len(page) < want; valid = it.Next() {
		id := string(it.Key()[len(prefix):])
		rec, err := readAt(recs, recordKey(kb[:0], id), id)
		if err == nil && rec.State != st {
			// The index and the record are read from one snapshot, and
			// written in one batch: they can only disagree if the store is
			// damaged.
			err = fmt.Errorf("%w: the record is %s", errCorrupt, rec.State)
		}
		if err != nil {
			_ = errors.Join(it.Close(), recs.Close())
			return page, fmt.Errorf("persistence: scan %s: index entry %s: %w", st, id, err)
		}
		page = append(page, rec)
	}
	if err := errors.Join(it.Error(), it.Close(), recs.Error(), recs.Close()); err != nil {
		return page, fmt.Errorf("persistence: scan %s: %w", st, err)
	}
	return page, nil
}

// ScanDue calls fn with the decided records that are due by until
// (NextAttemptAt <= until), earliest first (then by id), starting after
// pos, at most limit of them (<= 0: no limit), until fn returns false. fn
// also gets each record's position, to scan on from.
//
// It returns the NextAttemptAt of the first record due after until, if the
// scan reached one (zero if the index ended first, or fn or the limit
// stopped the scan): when to scan again.
//
// As with Scan, records are read in pages, each from one snapshot, and fn
// runs with no lock held. A record that moves meanwhile may be missed, or
// seen again at its new time.
//
// An entry whose record is gone, not decided or due at another time is
// deleted and passed over, with a warning. That cannot happen unless the
// store is damaged or a transition forgot the index: this is a defence, so
// that one bad entry cannot stop every callback read from the store.
func (s *Store) ScanDue(after DuePos, until time.Time, limit int, fn func(DuePos, session.Record) bool) (time.Time, error) {
	return s.scanDue(after, until, limit, nil, fn)
}

// ScanDueExcept is ScanDue from the start of the index that passes over
// the entries whose id skip reports, without reading their records (they
// count neither for limit nor for the time returned, unless not due): a
// reader that owns some due records reads only those it does not own.
// skip runs with the store's read lock held: it must be fast and must not
// call the store.
func (s *Store) ScanDueExcept(skip func(id string) bool, until time.Time, limit int, fn func(session.Record) bool) (time.Time, error) {
	return s.scanDue(DuePos{}, until, limit, skip, func(_ DuePos, rec session.Record) bool { return fn(rec) })
}

func (s *Store) scanDue(after DuePos, until time.Time, limit int, skip func(string) bool, fn func(DuePos, session.Record) bool) (time.Time, error) {
	var (
		page []dueEntry
		n    int
		err  error
		next time.Time
	)
	for {
		want := scanPageSize
		if limit > 0 && limit-n < want {
			want = limit - n
		}
		page, next, err = s.dueScanPage(page[:0], after, until, want, skip)
		if err != nil {
			return time.Time{}, err
		}
		for i := range page {
			n++
			if !fn(page[i].pos, page[i].rec) {
				return time.Time{}, nil
			}
		}
		if len(page) < want || (limit > 0 && n >= limit) {
			return next, nil
		}
		after = page[len(page)-1].pos
	}
}

type dueEntry struct {
	pos DuePos
	rec session.Record
}

// dueScanPage appends to page up to want entries after pos that are due by
// until, but those skip reports (skip may be nil); if it stops at an entry
// due later, it returns that entry's time.
func (s *Store) dueScanPage(page []dueEntry, after DuePos, until time.Time, want int, skip func(string) bool) ([]dueEntry, time.Time, error) {
	if err := s.rlock(); err != nil {
		return page, time.Time{}, err
	}
	defer s.mu.RUnlock()
	snap := s.db.NewSnapshot()
	defer snap.Close()

	prefix := []byte(duePrefix)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: after.key(), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return page, time.Time{}, fmt.Errorf("persistence: scan due: %w", err)
	}
	recs, err := newRecordIter(snap)
	if err != nil {
		_ = it.Close()
		return page, time.Time{}, fmt.Errorf("persistence: scan due: %w", err)
	}
	var (
		kb    [64]byte
		next  time.Time
		stale []staleDue
	)
	limit := dueNanos(until)
	for valid := it.First(); valid && len(page) < want; valid = it.Next() {
		k := it.Key()[len(prefix):]
		if len(k) < 8 {
			err = fmt.Errorf("%w: due index key %q", errCorrupt, it.Key())
			break
		}
		nanos, id := binary.BigEndian.Uint64(k), string(k[8:])
		at := time.Unix(0, int64(nanos)).UTC()
		if nanos > limit {
			next = at
			break
		}
		if skip != nil && skip(id) {
			continue
		}
		rec, rerr := readAt(recs, recordKey(kb[:0], id), id)
		if rerr != nil && !errors.Is(rerr, ErrNotFound) {
			err = fmt.Errorf("due index entry %s: %w", id, rerr)
			break
		}
		if rerr != nil || !dueAt(rec, nanos) {
			stale = append(stale, staleDue{key: append([]byte(nil), it.Key()...), id: id, nanos: nanos})
			continue
		}
		page = append(page, dueEntry{pos: DuePos{At: at, ID: id}, rec: rec})
	}
	if err = errors.Join(err, it.Error(), it.Close(), recs.Error(), recs.Close()); err != nil {
		return page, time.Time{}, fmt.Errorf("persistence: scan due: %w", err)
	}
	for _, e := range stale {
		if err := s.dropStaleDueRLocked(e); err != nil {
			return page, time.Time{}, fmt.Errorf("persistence: scan due: %w", err)
		}
	}
	return page, next, nil
}

// dueAt reports whether rec belongs in the due index at nanos.
func dueAt(rec session.Record, nanos uint64) bool {
	return rec.State == session.StateDecided && dueNanos(rec.NextAttemptAt) == nanos
}

// staleDue is a due index entry that does not match its record.
type staleDue struct {
	key   []byte
	id    string
	nanos uint64
}

// dropStaleDueRLocked deletes e if it still does not match its record,
// under the id's lock (a transition may have moved the record meanwhile).
// The deletion is not synced: one lost to a crash is made again. The
// caller holds s.mu.RLock.
func (s *Store) dropStaleDueRLocked(e staleDue) error {
	m := s.stripeFor(e.id)
	m.Lock()
	defer m.Unlock()
	if s.brokenErr() != nil {
		return nil // no writes now: a later scan drops it
	}
	rec, err := s.getRLocked(s.db, e.id)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	case dueAt(rec, e.nanos):
		return nil // it matches now
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Delete(e.key, nil); err != nil {
		return err
	}
	if err := s.commit(b, pebble.NoSync); err != nil {
		return err
	}
	s.log.Warn("deleted a due index entry that did not match its record", "request_id", e.id, "record_state", rec.State)
	return nil
}

// newRecordIter is an iterator over the records (r/), for readAt: a scan
// of an index reads its records with one iterator that only moves forward,
// as the index does. A Get per id opened the sstables' iterators and read
// their index blocks again for every record (a fifth of the CPU while a
// backlog drained).
func newRecordIter(r pebble.Reader) (*pebble.Iterator, error) {
	return r.NewIter(&pebble.IterOptions{LowerBound: []byte(recordPrefix), UpperBound: prefixEnd([]byte(recordPrefix))})
}

// readAt positions it at key, which must be there, and decodes its record.
func readAt(it *pebble.Iterator, key []byte, id string) (session.Record, error) {
	if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
		if err := it.Error(); err != nil {
			return session.Record{}, fmt.Errorf("persistence: get %s: %w", id, err)
		}
		return session.Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return session.Record{}, fmt.Errorf("persistence: get %s: %w", id, err)
	}
	return decodeRecord(id, v)
}

// List returns records newest first (descending id): those in state st (""
// = every state) with id < beforeID ("" = from the newest), at most limit of
// them (<= 0: no limit; callers serving a request should always pass one).
// The result is one consistent snapshot.
func (s *Store) List(st session.State, beforeID string, limit int) ([]session.Record, error) {
	if st != "" && stateIndex(st) < 0 {
		return nil, fmt.Errorf("persistence: list: invalid state %q", st)
	}
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	snap := s.db.NewSnapshot()
	defer snap.Close()

	var prefix []byte
	if st == "" {
		prefix = []byte(recordPrefix)
	} else {
		prefix = indexPrefix(nil, st)
	}
	upper := prefixEnd(prefix)
	if beforeID != "" {
		upper = append(append([]byte(nil), prefix...), beforeID...)
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("persistence: list: %w", err)
	}
	var out []session.Record
	for valid := it.Last(); valid && (limit <= 0 || len(out) < limit); valid = it.Prev() {
		id := string(it.Key()[len(prefix):])
		var rec session.Record
		if st == "" {
			v, verr := it.ValueAndErr()
			if verr == nil {
				rec, verr = decodeRecord(id, v)
			}
			err = verr
		} else {
			rec, err = s.getRLocked(snap, id)
		}
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("persistence: list: %s: %w", id, err)
		}
		out = append(out, rec)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("persistence: list: %w", err)
	}
	return out, nil
}

// Metrics returns Pebble's metrics (for the admin /metrics endpoint).
func (s *Store) Metrics() (*pebble.Metrics, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.db.Metrics(), nil
}

// SyncWAL makes every write that is already visible durable: Pebble shows a
// committed batch to readers before its fsync ends, so a record read (by
// Get or Scan) may not be on disk yet. One synced, empty WAL write covers
// everything written before it.
func (s *Store) SyncWAL() (err error) {
	defer func() { s.countFailure(err) }()
	if err := s.wlock(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := s.syncRLocked(); err != nil {
		return fmt.Errorf("persistence: sync WAL: %w", err)
	}
	return nil
}
