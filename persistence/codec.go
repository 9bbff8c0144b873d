package persistence

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/chargeauth/chargeauth/session"
)

// The value stored under r/<id> is a version byte and a body.
//
//	0x02 (recordV2)  the binary layout below; the only one written
//	0x01 (recordV1)  the same without the fields marked v2; still read
//	'{'              the JSON of session.Record, as written before recordV1;
//	                 still read so that existing data directories open, never
//	                 written
//
// recordV2 body, fields in this order, nothing after the last:
//
//	str  ID, StationID, DriverToken, CallbackURL
//	time AcceptedAt, DecideBy
//	str  State, Status, Reason, DecidedBy
//	time DecidedAt
//	int  CallbackAttempts
//	uint len(Attempts), then per attempt:
//	     time At; int StatusCode; str Error; DurationMS as 8 bytes,
//	     little-endian math.Float64bits; str Response (v2)
//	time NextAttemptAt
//	str  LastError
//	time DeliveredAt, FailedAt, RedeliveredAt
//	int  RoundStartAttempts (v2)
//	uint len(Redeliveries) (v2), then per redelivery: time FailedAt, At
//
// where uint is a uvarint, int a varint, str a uvarint byte length and the
// bytes, and time a tag byte:
//
//	timeZero  the zero time.Time, nothing follows
//	timeNano  varint UnixNano
//	timeSec   varint Unix seconds, uvarint nanoseconds (< 1e9): a time whose
//	          UnixNano does not fit in an int64 (before 1678 or after 2262)
//
// Times decode in UTC: the location and the monotonic reading are not kept,
// so compare decoded times with Equal. To change the layout, add a version;
// keep decoding the old ones. A recordV1 value decodes with the v2 fields
// zero: no response kept, the round started at attempt 0 (V1 reset the
// count on redelivery), no earlier redeliveries (V1 kept only
// RedeliveredAt).
const (
	recordV1   = 0x01
	recordV2   = 0x02
	recordJSON = '{'

	timeZero = 0
	timeNano = 1
	timeSec  = 2
)

// maxAttemptsDecoded bounds the attempt count a value may claim. Records keep
// at most session.MaxAttemptLog attempts; the bound leaves room for that limit
// to grow and stops a corrupt count from allocating much.
const maxAttemptsDecoded = 1000

// minAttemptSize is the fewest bytes one encoded attempt takes: a zero time,
// a one-byte status code, an empty error and the 8 bytes of DurationMS (and
// in recordV2 an empty response, not counted: the bound stays the V1 one).
const minAttemptSize = 1 + 1 + 1 + 8

// maxRedeliveriesDecoded bounds the redelivery count a value may claim, as
// maxAttemptsDecoded does the attempts'; each takes at least two bytes.
const maxRedeliveriesDecoded = 1000

// errCorrupt is wrapped, with the id and what was being read, by every
// decoding failure of a recordV1 or recordV2 value, and by an empty value.
var errCorrupt = errors.New("persistence: corrupt record")

// appendRecord appends the recordV2 encoding of rec to dst. It allocates
// only when dst must grow.
func appendRecord(dst []byte, rec *session.Record) []byte {
	dst = append(dst, recordV2)
	dst = appendString(dst, rec.ID)
	dst = appendString(dst, rec.StationID)
	dst = appendString(dst, rec.DriverToken)
	dst = appendString(dst, rec.CallbackURL)
	dst = appendTime(dst, rec.AcceptedAt)
	dst = appendTime(dst, rec.DecideBy)
	dst = appendString(dst, string(rec.State))
	dst = appendString(dst, string(rec.Status))
	dst = appendString(dst, rec.Reason)
	dst = appendString(dst, string(rec.DecidedBy))
	dst = appendTime(dst, rec.DecidedAt)
	dst = binary.AppendVarint(dst, int64(rec.CallbackAttempts))
	dst = binary.AppendUvarint(dst, uint64(len(rec.Attempts)))
	for i := range rec.Attempts {
		a := &rec.Attempts[i]
		dst = appendTime(dst, a.At)
		dst = binary.AppendVarint(dst, int64(a.StatusCode))
		dst = appendString(dst, a.Error)
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(a.DurationMS))
		dst = appendString(dst, a.Response)
	}
	dst = appendTime(dst, rec.NextAttemptAt)
	dst = appendString(dst, rec.LastError)
	dst = appendTime(dst, rec.DeliveredAt)
	dst = appendTime(dst, rec.FailedAt)
	dst = appendTime(dst, rec.RedeliveredAt)
	dst = binary.AppendVarint(dst, int64(rec.RoundStartAttempts))
	dst = binary.AppendUvarint(dst, uint64(len(rec.Redeliveries)))
	for _, r := range rec.Redeliveries {
		dst = appendTime(dst, r.FailedAt)
		dst = appendTime(dst, r.At)
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// The Unix seconds whose times have a UnixNano that fits in an int64, with a
// second of margin at each end.
const (
	minNanoSec = math.MinInt64/int64(time.Second) + 1
	maxNanoSec = math.MaxInt64/int64(time.Second) - 1
)

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, timeZero)
	}
	if sec := t.Unix(); sec < minNanoSec || sec > maxNanoSec {
		dst = append(dst, timeSec)
		dst = binary.AppendVarint(dst, sec)
		return binary.AppendUvarint(dst, uint64(t.Nanosecond()))
	}
	return binary.AppendVarint(append(dst, timeNano), t.UnixNano())
}

// decodeRecordBinary decodes a recordV1 or recordV2 value, version byte
// included; the caller wraps its errors with errCorrupt. Every
// string in the record is a substring of one copy of v, so the record holds
// nothing of v and costs one allocation for its strings and one for its
// attempts.
func decodeRecordBinary(v []byte) (session.Record, error) {
	v2 := v[0] == recordV2
	d := recordDecoder{b: v, s: string(v), off: 1}
	var rec session.Record
	rec.ID = d.string("id")
	rec.StationID = d.string("station_id")
	rec.DriverToken = d.string("driver_token")
	rec.CallbackURL = d.string("callback_url")
	rec.AcceptedAt = d.time("accepted_at")
	rec.DecideBy = d.time("decide_by")
	rec.State = session.State(d.string("state"))
	rec.Status = session.Status(d.string("status"))
	rec.Reason = d.string("reason")
	rec.DecidedBy = session.DecidedBy(d.string("decided_by"))
	rec.DecidedAt = d.time("decided_at")
	rec.CallbackAttempts = d.int("callback_attempts")
	if n := d.uvarint("attempts"); d.err == nil && n > 0 {
		if n > maxAttemptsDecoded || n > uint64(len(d.b)-d.off)/minAttemptSize {
			d.fail("attempts", fmt.Errorf("count %d too large", n))
		} else {
			rec.Attempts = make([]session.AttemptLog, n)
			for i := range rec.Attempts {
				a := &rec.Attempts[i]
				a.At = d.time("attempt at")
				a.StatusCode = d.int("attempt status_code")
				a.Error = d.string("attempt error")
				a.DurationMS = math.Float64frombits(d.uint64LE("attempt duration_ms"))
				if v2 {
					a.Response = d.string("attempt response")
				}
			}
		}
	}
	rec.NextAttemptAt = d.time("next_attempt_at")
	rec.LastError = d.string("last_error")
	rec.DeliveredAt = d.time("delivered_at")
	rec.FailedAt = d.time("failed_at")
	rec.RedeliveredAt = d.time("redelivered_at")
	if v2 {
		rec.RoundStartAttempts = d.int("round_start_attempts")
		if n := d.uvarint("redeliveries"); d.err == nil && n > 0 {
			if n > maxRedeliveriesDecoded || n > uint64(len(d.b)-d.off)/2 {
				d.fail("redeliveries", fmt.Errorf("count %d too large", n))
			} else {
				rec.Redeliveries = make([]session.Redelivery, n)
				for i := range rec.Redeliveries {
					rec.Redeliveries[i].FailedAt = d.time("redelivery failed_at")
					rec.Redeliveries[i].At = d.time("redelivery at")
				}
			}
		}
	}
	if d.err == nil && d.off != len(d.b) {
		d.fail("end", fmt.Errorf("%d trailing bytes", len(d.b)-d.off))
	}
	if d.err != nil {
		return session.Record{}, d.err
	}
	return rec, nil
}

// recordDecoder reads a recordV1 body. b and s hold the same bytes: numbers
// are read from b, strings are sliced from s. After the first error every
// read returns a zero value and err keeps that first error.
type recordDecoder struct {
	b   []byte
	s   string
	off int
	err error
}

func (d *recordDecoder) fail(field string, err error) {
	if d.err == nil {
		d.err = fmt.Errorf("%s at byte %d: %w", field, d.off, err)
	}
}

var errTruncated = errors.New("truncated")

func (d *recordDecoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(field, errVarint(n))
		return 0
	}
	d.off += n
	return x
}

func (d *recordDecoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail(field, errVarint(n))
		return 0
	}
	d.off += n
	return x
}

// errVarint explains the n <= 0 that binary.Uvarint and Varint return.
func errVarint(n int) error {
	if n == 0 {
		return errTruncated
	}
	return errors.New("varint overflows 64 bits")
}

func (d *recordDecoder) int(field string) int {
	x := d.varint(field)
	if int64(int(x)) != x {
		d.fail(field, fmt.Errorf("%d overflows int", x))
		return 0
	}
	return int(x)
}

func (d *recordDecoder) string(field string) string {
	n := d.uvarint(field)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail(field, fmt.Errorf("length %d: %w", n, errTruncated))
		return ""
	}
	s := d.s[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}

func (d *recordDecoder) uint64LE(field string) uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail(field, errTruncated)
		return 0
	}
	x := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return x
}

func (d *recordDecoder) time(field string) time.Time {
	if d.err != nil {
		return time.Time{}
	}
	if d.off == len(d.b) {
		d.fail(field, errTruncated)
		return time.Time{}
	}
	tag := d.b[d.off]
	d.off++
	switch tag {
	case timeZero:
		return time.Time{}
	case timeNano:
		ns := d.varint(field)
		if d.err != nil {
			return time.Time{}
		}
		return time.Unix(0, ns).UTC()
	case timeSec:
		sec := d.varint(field)
		ns := d.uvarint(field)
		if d.err != nil {
			return time.Time{}
		}
		if ns >= 1e9 {
			d.fail(field, fmt.Errorf("nanoseconds %d out of range", ns))
			return time.Time{}
		}
		return time.Unix(sec, int64(ns)).UTC()
	default:
		d.off--
		d.fail(field, fmt.Errorf("unknown time tag 0x%02x", tag))
		return time.Time{}
	}
}

// decodeRecordJSON decodes a value written before recordV1.
func decodeRecordJSON(v []byte) (session.Record, error) {
	var rec session.Record
	if err := json.Unmarshal(v, &rec); err != nil {
		return session.Record{}, err
	}
	return rec, nil
}
