// Package persistence owns the Pebble store: key layout, value encoding, and
// the transitions pending→decided→delivered|failed. It imports nothing from
// actors or http.
//
// # Key layout
//
//	r/<id>          -> the session.Record in a versioned binary encoding
//	                   (codec.go has the layout; JSON, as written before it,
//	                   is still read); read records only through this package
//	s/<state>/<id>  -> empty: the state index, one entry per record, in the
//	                   record's current state
//	d/<at><id>      -> empty: the due index, one entry per decided record,
//	                   at its NextAttemptAt (8 big-endian bytes of Unix
//	                   nanoseconds), so that ScanDue reads what is due,
//	                   earliest first, and stops at the first not due;
//	                   every Open that can write builds it again
//
// Ids are UUIDv7 strings (lowercase hex), so byte order is time order: a scan
// of s/pending/ from the start yields the oldest waiting request first, and
// List walks r/ backwards for the newest.
//
// # Invariants
//
//   - A record and its index entries are written in one batch: for every
//     r/<id> there is exactly one s/<state>/<id>, with state == record.State,
//     and a decided record has exactly one d/<at><id>, with at ==
//     record.NextAttemptAt (other records have none). Every Open that can
//     write builds d/ again (an older version may have written the store);
//     ScanDue deletes an entry that breaks this instead of handing out its
//     record, as a defence.
//   - Accept, Decide, Redeliver and a failed or retried callback attempt are
//     durable when they return nil (synced through the group commit,
//     committer.go). A delivered attempt is visible at once and durable with
//     the next synced write: a crash before that (a process crash too: Pebble
//     holds unsynced writes in its own buffer) leaves the record decided, and
//     its callback is sent once more (delivery is at least once).
//   - A record only moves along pending→decided→delivered|failed, and
//     failed→decided on Redeliver. Transitions on one id are serialised by a
//     striped lock, so a compare-and-set (Decide) has exactly one winner.
//   - Accept takes no per-id lock: concurrent Accepts queue in the group
//     commit (behind its small mutex) and share one batch and one fsync. A
//     group of syncs alone waits up to Config.SyncLinger for an accept to
//     carry it; an accept never waits for one.
//   - Pebble panics on a closed DB and calls Logger.Fatalf (which panics here)
//     on a failed commit. The store therefore decides ErrClosing and
//     ErrDiskFull itself, before it touches Pebble.
//
// # Locks
//
// Store.mu.RWMutex guards the closed flag and the life of the Pebble handle:
// every method that touches Pebble holds the read lock for as long as it does,
// and Close takes the write lock. After a failed write (recover.go) the store
// is broken: writes are refused before the lock, reads go on (from a
// read-only open while the failed Pebble is retired), and the recovery takes
// the write lock only with TryLock, for a swap of handles, never across a
// probe, a sleep or an open, so that no reader ever queues behind it. The per-id stripes (Store.mu.ids) are taken
// after the read lock, never before. No method takes the read lock twice, and
// Scan calls its callback with no lock held, so a callback may call back into
// the store.
package persistence
