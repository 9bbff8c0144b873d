package persistence

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
)

// fullRecord has every field of Record, Request and AttemptLog set to a
// non-zero value (TestFullRecordIsFull checks), in locations other than UTC.
func fullRecord() *session.Record {
	paris := time.FixedZone("CET", 3600)
	at := time.Date(2026, 3, 4, 5, 6, 7, 891234567, paris)
	return &session.Record{
		ID: "01963d2a-7c4e-7b1a-9f3e-2a4b6c8d0e1f",
		Request: session.Request{
			StationID:   "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: "validDriverToken1234567",
			CallbackURL: "https://example.com/callback?x=ü",
		},
		AcceptedAt: at,
		DecideBy:   at.Add(10 * time.Second),
		State:      session.StateDelivered,
		Status:     session.StatusNotAllowed,
		Reason:     "token blocked",
		DecidedBy:  session.ByAuthz,
		DecidedAt:  at.Add(120 * time.Millisecond),

		CallbackAttempts: 3,
		Attempts: []session.AttemptLog{
			{At: at.Add(time.Second), StatusCode: 503, Error: "503 Service Unavailable", DurationMS: 12.5, Response: "busy\r\n\x00\xff"},
			{At: at.Add(3 * time.Second), StatusCode: -1, Error: "dial tcp: connection refused", DurationMS: 0.25, Response: "-"},
			{At: at.Add(7 * time.Second).In(time.UTC), StatusCode: 204, Error: "-", DurationMS: 3.0e-9, Response: `{"ok":true}`},
		},
		NextAttemptAt: at.Add(15 * time.Second),
		LastError:     "dial tcp: connection refused",
		DeliveredAt:   at.Add(7 * time.Second),
		FailedAt:      at.Add(5 * time.Second),
		RedeliveredAt: at.Add(6 * time.Second),

		RoundStartAttempts: 2,
		Redeliveries: []session.Redelivery{
			{FailedAt: at.Add(2 * time.Second), At: at.Add(2500 * time.Millisecond)},
			{FailedAt: at.Add(5 * time.Second), At: at.Add(6 * time.Second).In(time.UTC)},
		},
	}
}

// farRecord has times whose UnixNano does not fit in an int64, and extreme
// numbers.
func farRecord() *session.Record {
	rec := pending("far", time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC))
	rec.DecideBy = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	rec.DecidedAt = time.Date(1677, 9, 21, 0, 12, 43, 145224191, time.UTC) // one ns before the int64 UnixNano range
	rec.NextAttemptAt = time.Unix(0, math.MinInt64).UTC()
	rec.DeliveredAt = time.Unix(0, math.MaxInt64).UTC()
	rec.FailedAt = time.Unix(0, 0).UTC() // the epoch is not the zero time
	rec.CallbackAttempts = math.MinInt64
	rec.Attempts = []session.AttemptLog{
		{StatusCode: math.MaxInt64, DurationMS: math.Inf(-1)},
		{DurationMS: math.NaN()},
		{DurationMS: math.Copysign(0, -1)},
	}
	rec.RoundStartAttempts = math.MaxInt64
	rec.Redeliveries = []session.Redelivery{{}, {At: time.Unix(0, math.MinInt64).UTC()}}
	return rec
}

func TestFullRecordIsFull(t *testing.T) {
	// A field added to Record, Request or AttemptLog fails here until
	// fullRecord sets it, and then fails the round trip until the codec
	// writes it.
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		if v.IsZero() {
			t.Errorf("fullRecord: %s is zero", path)
		}
		switch v.Kind() {
		case reflect.Struct:
			if v.Type() == reflect.TypeFor[time.Time]() {
				return
			}
			for i := range v.NumField() {
				walk(path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(fmt.Sprintf("%s[%d]", path, i), v.Index(i))
			}
		}
	}
	walk("Record", reflect.ValueOf(*fullRecord()))
}

func TestRecordRoundTrip(t *testing.T) {
	for name, rec := range map[string]*session.Record{
		"full":    fullRecord(),
		"pending": pending("01963d2a-7c4e-7b1a-9f3e-2a4b6c8d0e1f", t0),
		"far":     farRecord(),
		"empty":   {},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := encodeRecord([]byte("kept"), rec)
			if err != nil {
				t.Fatal(err)
			}
			if string(v[:4]) != "kept" {
				t.Fatalf("encodeRecord did not append to dst: %q", v)
			}
			v = v[4:]
			if v[0] != recordV2 {
				t.Fatalf("version byte %#x, want %#x", v[0], recordV2)
			}
			got, err := decodeRecord(rec.ID, v)
			if err != nil {
				t.Fatal(err)
			}
			// decodeRecord keeps nothing of v: Pebble reuses it.
			for i := range v {
				v[i] = 0xff
			}
			mustEqualRecord(t, got, rec)
			eachTime(got, func(path string, tm time.Time) {
				if tm.Location() != time.UTC {
					t.Errorf("%s decoded in %v, want UTC", path, tm.Location())
				}
			})
		})
	}
}

func TestDecodeRecordJSON(t *testing.T) {
	// A value as the JSON encoding wrote it, byte for byte.
	const old = `{"request_id":"01963d2a-7c4e-7b1a-9f3e-2a4b6c8d0e1f",` +
		`"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567",` +
		`"callback_url":"https://example.com/callback","accepted_at":"2026-01-01T00:00:00Z",` +
		`"decide_by":"2026-01-01T00:00:10Z","state":"failed","status":"allowed","decided_by":"authz",` +
		`"decided_at":"2026-01-01T01:00:00.25+01:00","callback_attempts":1,` +
		`"attempts":[{"at":"2026-01-01T00:00:01.5Z","status_code":500,"error":"500 Internal Server Error","duration_ms":1.5}],` +
		`"last_error":"500 Internal Server Error","failed_at":"2026-01-01T00:00:02Z"}`
	want := pending("01963d2a-7c4e-7b1a-9f3e-2a4b6c8d0e1f", t0)
	want.State = session.StateFailed
	want.Status = session.StatusAllowed
	want.DecidedBy = session.ByAuthz
	want.DecidedAt = t0.Add(250 * time.Millisecond)
	want.CallbackAttempts = 1
	want.Attempts = []session.AttemptLog{{At: t0.Add(1500 * time.Millisecond), StatusCode: 500, Error: "500 Internal Server Error", DurationMS: 1.5}}
	want.LastError = "500 Internal Server Error"
	want.FailedAt = t0.Add(2 * time.Second)

	got, err := decodeRecord(want.ID, []byte(old))
	if err != nil {
		t.Fatal(err)
	}
	mustEqualRecord(t, got, want)

	// And whatever encoding/json makes of a full record, but the fields
	// added after the JSON encoding, which it never wrote.
	full := fullRecord()
	full.RoundStartAttempts, full.Redeliveries = 0, nil
	full.Attempts[0].Response = "busy\r\n\x00" // JSON strings are UTF-8: \xff would not survive
	v, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	got, err = decodeRecord(full.ID, v)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualRecord(t, got, full)
}

func TestDecodeRecordErrors(t *testing.T) {
	valid := appendRecord(nil, fullRecord())
	// In the hand-made values, 12 zero bytes after the version are the
	// empty strings and zero times before the attempt count, and 5 zero
	// bytes are those after the attempts.
	for _, tc := range []struct {
		name, v string
		corrupt bool // wraps errCorrupt
	}{
		{"empty", "", true},
		{"version 0", "\x00", false},
		{"version 3", "\x03" + string(valid[1:]), false},
		{"redelivery count over the bytes left", "\x02" + strings.Repeat("\x00", 19) + "\x05\x00\x00", true},
		{"redelivery count over the limit", "\x02" + strings.Repeat("\x00", 19) + "\xe9\x07" + strings.Repeat("\x00", 2*1001), true},
		{"v1 value read as v2", "\x02" + string(goldenV1(t, "FULL")[1:]), true},
		{"bad json", `{"request_id":`, false},
		{"json array", `[]`, false},
		{"trailing byte", string(valid) + "\x00", true},
		{"string past the end", "\x01\x05abc", true},
		{"varint overflow", "\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", true},
		{"unknown time tag", "\x01\x00\x00\x00\x00\x03", true},
		{"nanoseconds out of range", "\x01\x00\x00\x00\x00\x02\x00\x80\x94\xeb\xdc\x03", true},
		{"attempt count over the limit", "\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xe9\x07" + strings.Repeat("\x00", 1001*minAttemptSize+5), true},
		{"attempt count over the bytes left", "\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02" + strings.Repeat("\x00", minAttemptSize+5), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRecord("the-id", []byte(tc.v))
			if err == nil {
				t.Fatal("decoded")
			}
			if !strings.Contains(err.Error(), "the-id") {
				t.Errorf("error %q does not name the id", err)
			}
			if errors.Is(err, errCorrupt) != tc.corrupt {
				t.Errorf("errors.Is(%q, errCorrupt) = %v, want %v", err, !tc.corrupt, tc.corrupt)
			}
		})
	}
	// The minimal valid value, to show the cases above differ from it only
	// where they mean to.
	minimal := "\x02" + strings.Repeat("\x00", 20)
	if _, err := decodeRecord("the-id", []byte(minimal)); err != nil {
		t.Fatalf("minimal value: %v", err)
	}
	if _, err := decodeRecord("the-id", []byte("\x01"+strings.Repeat("\x00", 18))); err != nil {
		t.Fatalf("minimal v1 value: %v", err)
	}
	if got := appendRecord(nil, &session.Record{}); string(got) != minimal {
		t.Fatalf("empty record encodes as %q, want %q", got, minimal)
	}
}

func TestDecodeRecordTruncated(t *testing.T) {
	for _, rec := range []*session.Record{fullRecord(), pending("p", t0), farRecord()} {
		v := appendRecord(nil, rec)
		for i := range len(v) {
			// A fresh slice, so that reading past its end is caught.
			if got, err := decodeRecord(rec.ID, bytes.Clone(v[:i])); err == nil {
				t.Errorf("%s: %d of %d bytes decoded: %+v", rec.ID, i, len(v), got)
			}
		}
	}
}

func TestEncodeRecordTooManyAttempts(t *testing.T) {
	rec := pending("many", t0)
	rec.Attempts = make([]session.AttemptLog, maxAttemptsDecoded+1)
	if _, err := encodeRecord(nil, rec); err == nil || !strings.Contains(err.Error(), "many") {
		t.Fatalf("encode %d attempts: err %v, want an error naming the id", len(rec.Attempts), err)
	}
	rec.Attempts = rec.Attempts[:maxAttemptsDecoded]
	v, err := encodeRecord(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeRecord(rec.ID, v)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualRecord(t, got, rec)
}

func TestRecordCodecAllocs(t *testing.T) {
	full, pend := fullRecord(), pending("01963d2a-7c4e-7b1a-9f3e-2a4b6c8d0e1f", t0)
	fullV, pendV := appendRecord(nil, full), appendRecord(nil, pend)
	buf := make([]byte, 0, 512)
	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{"appendRecord into room", 0, func() { buf = appendRecord(buf[:0], full) }},
		{"encodeRecord into room", 0, func() { buf, _ = encodeRecord(buf[:0], full) }},
		{"decodeRecord pending", 1, func() { _, _ = decodeRecord(pend.ID, pendV) }}, // the strings
		{"decodeRecord full", 3, func() { _, _ = decodeRecord(full.ID, fullV) }},    // the strings, the attempts, the redeliveries
	} {
		if got := testing.AllocsPerRun(100, tc.f); got > tc.max {
			t.Errorf("%s: %v allocations, want at most %v", tc.name, got, tc.max)
		}
	}
}

// FuzzDecodeRecord: decoding never panics, and whatever decodes encodes
// again to a value that decodes to the same record. Seeds are the f.Add
// values below and testdata/fuzz/FuzzDecodeRecord.
func FuzzDecodeRecord(f *testing.F) {
	for _, rec := range []*session.Record{fullRecord(), pending("p", t0), farRecord(), {}} {
		f.Add(appendRecord(nil, rec))
		v, err := json.Marshal(rec)
		if err == nil {
			f.Add(v)
		}
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		rec, err := decodeRecord("fuzz", v)
		if err != nil {
			return
		}
		v2, err := encodeRecord(nil, &rec)
		if err != nil {
			if len(rec.Attempts) > maxAttemptsDecoded { // only from JSON
				return
			}
			t.Fatalf("re-encode: %v", err)
		}
		got, err := decodeRecord("fuzz", v2)
		if err != nil {
			t.Fatalf("decode the re-encoding %q: %v", v2, err)
		}
		mustEqualRecord(t, got, &rec)
	})
}

// BenchmarkEncodeRecord compares the binary encoding with the JSON one it
// replaces. codec=append appends into a reused buffer, as a batch could.
func BenchmarkEncodeRecord(b *testing.B) {
	for _, r := range benchRecords() {
		b.Run("codec=binary/rec="+r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := encodeRecord(make([]byte, 0, recordRoom), r.rec); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("codec=append/rec="+r.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = appendRecord(buf[:0], r.rec)
			}
		})
		b.Run("codec=json/rec="+r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(r.rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	for _, r := range benchRecords() {
		for _, c := range []struct {
			name string
			v    []byte
		}{
			{"binary", appendRecord(nil, r.rec)},
			{"json", must(json.Marshal(r.rec))},
		} {
			b.Run("codec="+c.name+"/rec="+r.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(c.v)))
				for b.Loop() {
					if _, err := decodeRecord(r.rec.ID, c.v); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// benchRecords are a record as Accept writes it and one delivered after
// three callback attempts.
func benchRecords() []struct {
	name string
	rec  *session.Record
} {
	full := fullRecord()
	for _, p := range []*time.Time{&full.AcceptedAt, &full.DecideBy, &full.DecidedAt, &full.NextAttemptAt,
		&full.DeliveredAt, &full.FailedAt, &full.RedeliveredAt} {
		*p = p.UTC() // as the service's clock gives them
	}
	return []struct {
		name string
		rec  *session.Record
	}{
		{"pending", pending("01963d2a-7c4e-7b1a-9f3e-2a4b6c8d0e1f", t0)},
		{"delivered", full},
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// mustEqualRecord fails unless got and want have equal fields: times are
// compared with Equal, floats by their bits (NaN included), and a nil slice
// equals an empty one.
func mustEqualRecord(t testing.TB, got session.Record, want *session.Record) {
	t.Helper()
	if diff := diffValues("Record", reflect.ValueOf(got), reflect.ValueOf(*want)); diff != "" {
		t.Fatalf("records differ: %s\ngot  %+v\nwant %+v", diff, got, *want)
	}
}

func diffValues(path string, got, want reflect.Value) string {
	switch {
	case got.Type() == reflect.TypeFor[time.Time]():
		g, w := got.Interface().(time.Time), want.Interface().(time.Time)
		if !g.Equal(w) {
			return fmt.Sprintf("%s: %v, want %v", path, g, w)
		}
	case got.Kind() == reflect.Struct:
		for i := range got.NumField() {
			if d := diffValues(path+"."+got.Type().Field(i).Name, got.Field(i), want.Field(i)); d != "" {
				return d
			}
		}
	case got.Kind() == reflect.Slice:
		if got.Len() != want.Len() {
			return fmt.Sprintf("%s: %d elements, want %d", path, got.Len(), want.Len())
		}
		for i := range got.Len() {
			if d := diffValues(fmt.Sprintf("%s[%d]", path, i), got.Index(i), want.Index(i)); d != "" {
				return d
			}
		}
	case got.Kind() == reflect.Float64:
		if math.Float64bits(got.Float()) != math.Float64bits(want.Float()) {
			return fmt.Sprintf("%s: %v, want %v", path, got.Float(), want.Float())
		}
	case got.Kind() == reflect.String || got.Kind() == reflect.Int:
		if !got.Equal(want) {
			return fmt.Sprintf("%s: %v, want %v", path, got, want)
		}
	default:
		return fmt.Sprintf("%s: diffValues does not compare a %v", path, got.Kind())
	}
	return ""
}

// eachTime calls f with every time in rec.
func eachTime(rec session.Record, f func(path string, t time.Time)) {
	f("AcceptedAt", rec.AcceptedAt)
	f("DecideBy", rec.DecideBy)
	f("DecidedAt", rec.DecidedAt)
	for i, a := range rec.Attempts {
		f(fmt.Sprintf("Attempts[%d].At", i), a.At)
	}
	f("NextAttemptAt", rec.NextAttemptAt)
	f("DeliveredAt", rec.DeliveredAt)
	f("FailedAt", rec.FailedAt)
	f("RedeliveredAt", rec.RedeliveredAt)
}

// goldenV1 is a value written by the version before recordV2, from
// testdata/recordv1.
func goldenV1(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/recordv1")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "v1" && f[1] == name {
			v, err := hex.DecodeString(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("testdata/recordv1: no value %s", name)
	return nil
}

// Records written by the version before recordV2 still decode, with the
// fields it did not have zero; a redelivered one shows its redelivery.
func TestDecodeRecordV1(t *testing.T) {
	want := fullRecord()
	want.RoundStartAttempts, want.Redeliveries = 0, nil
	for i := range want.Attempts {
		want.Attempts[i].Response = ""
	}
	v := goldenV1(t, "FULL")
	if v[0] != recordV1 {
		t.Fatalf("golden value has version %#x", v[0])
	}
	got, err := decodeRecord(want.ID, v)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualRecord(t, got, want)

	red, err := decodeRecord("r", goldenV1(t, "REDELIVERED"))
	if err != nil {
		t.Fatal(err)
	}
	if red.State != session.StateDecided || red.CallbackAttempts != 1 || red.RoundStartAttempts != 0 {
		t.Errorf("redelivered v1: %+v", red)
	}
	var steps []string
	for _, tr := range red.Transitions() {
		steps = append(steps, fmt.Sprintf("%s@+%s", tr.State, tr.At.Sub(t0)))
	}
	if got, want := strings.Join(steps, " "), "pending@+0s decided@+1s redelivered@+1m0s"; got != want {
		t.Errorf("transitions %s, want %s", got, want)
	}

	// Written again, it is a recordV2 value that decodes to the same.
	v2, err := encodeRecord(nil, &got)
	if err != nil {
		t.Fatal(err)
	}
	if v2[0] != recordV2 {
		t.Fatalf("re-encoded with version %#x", v2[0])
	}
	again, err := decodeRecord(want.ID, v2)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualRecord(t, again, want)
}
