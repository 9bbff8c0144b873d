package persistence

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/chargeauth/chargeauth/session"
)

// Key prefixes. See doc.go for the layout.
const (
	recordPrefix = "r/"
	indexPrefixS = "s/"
	duePrefix    = "d/"
)

// dueKey appends d/<at><id> to buf: at as 8 big-endian bytes of Unix
// nanoseconds (0 before 1970), so that byte order is time order.
func dueKey(buf []byte, at time.Time, id string) []byte {
	buf = append(buf, duePrefix...)
	buf = binary.BigEndian.AppendUint64(buf, dueNanos(at))
	return append(buf, id...)
}

func dueNanos(at time.Time) uint64 {
	if at.Before(time.Unix(0, 0)) {
		return 0
	}
	return uint64(at.UnixNano())
}

// DuePos is a position in the due index, between two of its entries: a
// scan from it (ScanDue) starts with the first entry after it. The zero
// DuePos is before every entry.
type DuePos struct {
	At time.Time
	// ID "" is before every entry due at At.
	ID string
}

// Before orders positions as the index does: by time, then id.
func (p DuePos) Before(q DuePos) bool {
	if a, b := dueNanos(p.At), dueNanos(q.At); a != b {
		return a < b
	}
	return p.ID < q.ID
}

// DuePosBefore is the position before every entry due at rec's
// NextAttemptAt, rec's own among them.
func DuePosBefore(rec session.Record) DuePos { return DuePos{At: rec.NextAttemptAt} }

// key is the lower bound, inclusive, of the entries after p.
func (p DuePos) key() []byte {
	if p.At.IsZero() && p.ID == "" {
		return []byte(duePrefix)
	}
	k := dueKey(nil, p.At, p.ID)
	if p.ID != "" {
		k = append(k, 0)
	}
	return k
}

// recordKey appends r/<id> to buf.
func recordKey(buf []byte, id string) []byte {
	buf = append(buf, recordPrefix...)
	return append(buf, id...)
}

// indexPrefix appends s/<state>/ to buf.
func indexPrefix(buf []byte, st session.State) []byte {
	buf = append(buf, indexPrefixS...)
	buf = append(buf, st...)
	return append(buf, '/')
}

// indexKey appends s/<state>/<id> to buf.
func indexKey(buf []byte, st session.State, id string) []byte {
	return append(indexPrefix(buf, st), id...)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// for an exclusive upper bound. p ends in '/', which is never 0xff.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++
	return end
}

// idAfter returns the smallest key greater than prefix+id: an inclusive lower
// bound that excludes prefix+id itself.
func idAfter(prefix []byte, id string) []byte {
	k := append(append([]byte(nil), prefix...), id...)
	return append(k, 0)
}

// encodeRecord appends to dst the value stored under r/<id>: the recordV2
// encoding (see codec.go). It refuses a record with more attempts or
// redeliveries than
// decodeRecord accepts. Callers pass a buffer they reuse, or one with room
// for a typical record (recordRoom).
func encodeRecord(dst []byte, rec *session.Record) ([]byte, error) {
	if len(rec.Attempts) > maxAttemptsDecoded {
		return dst, fmt.Errorf("persistence: encode %s: %d attempts, more than %d",
			rec.ID, len(rec.Attempts), maxAttemptsDecoded)
	}
	if len(rec.Redeliveries) > maxRedeliveriesDecoded {
		return dst, fmt.Errorf("persistence: encode %s: %d redeliveries, more than %d",
			rec.ID, len(rec.Redeliveries), maxRedeliveriesDecoded)
	}
	return appendRecord(dst, rec), nil
}

// recordRoom holds a record with a few attempts in one allocation.
const recordRoom = 512

// decodeRecord reads a value stored under r/<id>: recordV2, recordV1, or the JSON
// written before it. v may be reused by Pebble after the call: decodeRecord
// copies what it keeps. Times decode in UTC from recordV1 and in their
// written offset from JSON: compare them with Equal.
func decodeRecord(id string, v []byte) (session.Record, error) {
	var (
		rec session.Record
		err error
	)
	switch {
	case len(v) == 0:
		return session.Record{}, fmt.Errorf("%w %s: empty value", errCorrupt, id)
	case v[0] == recordV1 || v[0] == recordV2:
		if rec, err = decodeRecordBinary(v); err != nil {
			return session.Record{}, fmt.Errorf("%w %s: %w", errCorrupt, id, err)
		}
	case v[0] == recordJSON:
		rec, err = decodeRecordJSON(v)
	default:
		err = fmt.Errorf("unknown format version 0x%02x", v[0])
	}
	if err != nil {
		return session.Record{}, fmt.Errorf("persistence: decode %s: %w", id, err)
	}
	return rec, nil
}
