package session

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// fjState is what one parse with fastjson needs, pooled.
type fjState struct {
	p       fastjson.Parser
	scratch []byte
}

// fjStates pools parsers the way fastjson.ParserPool does (a sync.Pool),
// with a scratch buffer beside each.
var fjStates = sync.Pool{New: func() any { return new(fjState) }}

func getFJ() *fjState  { return fjStates.Get().(*fjState) }
func putFJ(s *fjState) { fjStates.Put(s) }

// parseRequestFastjson is ParseRequest written on github.com/valyala/fastjson
// (issue 13, item 7), to measure it against the hand-written parser in the
// same run:
//
//	go test -run x -bench ParseRequestImpl -count 6 ./session | benchstat -col /impl -
func parseRequestFastjson(body []byte) (Request, []FieldError) {
	if !utf8.Valid(body) {
		return Request{}, []FieldError{{Field: FieldBody, Message: msgBodyUTF8}}
	}
	if isAllWS(body) {
		return Request{}, []FieldError{{Field: FieldBody, Message: msgBodyEmpty}}
	}
	st := getFJ()
	defer putFJ(st)
	v, err := st.p.ParseBytes(body)
	if err != nil {
		// fastjson's own MaxDepth is 300; its message echoes up to 80 bytes of
		// the body (the token may be there), so it cannot be shown.
		if strings.Contains(err.Error(), "too big depth") {
			return Request{}, []FieldError{{Field: FieldBody, Message: msgBodyTooDeep}}
		}
		return Request{}, []FieldError{{Field: FieldBody, Message: "body is not valid JSON"}}
	}
	// fastjson.Parser accepts 01, NaN, Inf, bad escapes and raw control
	// characters: only Validate is strict (and has no depth limit, so it runs
	// after Parse has bounded the depth).
	if err := fastjson.ValidateBytes(body); err != nil {
		return Request{}, []FieldError{{Field: FieldBody, Message: "body is not valid JSON"}}
	}
	if tooDeep(v, 1) {
		return Request{}, []FieldError{{Field: FieldBody, Message: msgBodyTooDeep}}
	}
	o, err := v.Object()
	if err != nil {
		return Request{}, []FieldError{{Field: FieldBody, Message: msgBodyNotObject}}
	}

	var kind [numFields]valueKind
	var vals [numFields]*fastjson.Value
	var dup [numFields]bool
	var unknown map[string]bool
	var bodyErrs []FieldError
	// Visit unescapes keys "best effort": a lone surrogate stays as the six
	// characters \ud800, unlike encoding/json (U+FFFD).
	o.Visit(func(key []byte, val *fastjson.Value) {
		f := knownField(string(key))
		if f < 0 {
			if unknown == nil {
				unknown = make(map[string]bool)
			}
			reported, seen := unknown[string(key)]
			if seen && reported {
				return
			}
			name := string(key)
			unknown[name] = seen
			if seen {
				bodyErrs = append(bodyErrs, FieldError{Field: FieldBody, Message: "duplicate key " + quoteKey(name)})
			}
			return
		}
		if kind[f] != kindAbsent {
			dup[f] = true
		}
		if val.Type() == fastjson.TypeString {
			kind[f], vals[f] = kindString, val
		} else {
			kind[f] = kindOther
		}
	})

	var req Request
	total := 0
	var raw [numFields][]byte
	buf := st.scratch[:0]
	var bounds [numFields][2]int
	for f := range numFields {
		if kind[f] == kindString {
			bounds[f][0] = len(buf)
			buf = vals[f].MarshalTo(buf) // raw, quoted
			bounds[f][1] = len(buf)
		}
	}
	st.scratch = buf
	for f := range numFields {
		if kind[f] == kindString {
			raw[f] = buf[bounds[f][0]+1 : bounds[f][1]-1]
			total += len(raw[f])
		}
	}
	if total > 0 {
		var sb strings.Builder
		sb.Grow(total)
		for f := range numFields {
			if kind[f] != kindString {
				continue
			}
			bounds[f][0] = sb.Len()
			writeUnescaped(&sb, raw[f])
			bounds[f][1] = sb.Len()
		}
		s := sb.String()
		req.StationID = s[bounds[idxStation][0]:bounds[idxStation][1]]
		req.DriverToken = s[bounds[idxToken][0]:bounds[idxToken][1]]
		req.CallbackURL = s[bounds[idxURL][0]:bounds[idxURL][1]]
	}

	errs := bodyErrs
	for f := range numFields {
		switch {
		case dup[f]:
			errs = append(errs, FieldError{Field: fieldNames[f], Message: dupMessages[f]})
		case kind[f] == kindAbsent:
			errs = append(errs, FieldError{Field: fieldNames[f], Message: missingMessages[f]})
		case kind[f] == kindOther:
			errs = append(errs, FieldError{Field: fieldNames[f], Message: typeMessages[f]})
		default:
			switch f {
			case idxStation:
				errs = appendStationIDErrors(errs, req.StationID)
			case idxToken:
				errs = appendDriverTokenErrors(errs, req.DriverToken)
			case idxURL:
				errs = appendCallbackURLErrors(errs, req.CallbackURL)
			}
		}
	}
	return req, errs
}

func isAllWS(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return false
		}
	}
	return true
}

// tooDeep reports whether v, at depth d, nests containers deeper than maxDepth.
func tooDeep(v *fastjson.Value, d int) bool {
	switch v.Type() {
	case fastjson.TypeObject:
		if d > maxDepth {
			return true
		}
		o, _ := v.Object()
		deep := false
		o.Visit(func(_ []byte, c *fastjson.Value) {
			if !deep && tooDeep(c, d+1) {
				deep = true
			}
		})
		return deep
	case fastjson.TypeArray:
		if d > maxDepth {
			return true
		}
		a, _ := v.Array()
		for _, c := range a {
			if tooDeep(c, d+1) {
				return true
			}
		}
	}
	return false
}

// TestParseRequestFastjson runs the table on parseRequestFastjson. It finds
// the same fields and the same request in every case; the messages of syntax
// errors are lost (fastjson's own name no offset and quote up to 80 bytes of
// the body, where the token may be), and the test logs each one.
func TestParseRequestFastjson(t *testing.T) {
	var lost atomic.Int32
	defer func() { t.Logf("%d syntax messages lost of %d cases", lost.Load(), len(parseCases)) }()
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := parseRequestFastjson([]byte(tc.body))
			var fields, msgs []string
			for _, e := range errs {
				fields = append(fields, e.Field)
				msgs = append(msgs, e.Message)
			}
			if !slices.Equal(fields, tc.fields) {
				t.Fatalf("fields = %q, want %q (messages %q)", fields, tc.fields, msgs)
			}
			if tc.want != nil && got != *tc.want {
				t.Fatalf("request = %#v, want %#v", got, *tc.want)
			}
			own, ownErrs := ParseRequest([]byte(tc.body))
			if own != got {
				t.Fatalf("request = %#v, ParseRequest = %#v", got, own)
			}
			if d := messageDiff(ownErrs, errs); d != "" {
				lost.Add(1)
				t.Logf("message lost: %s", d)
			}
		})
	}
}

func BenchmarkParseRequestImpl(b *testing.B) {
	for _, impl := range []struct {
		name string
		f    func([]byte) (Request, []FieldError)
	}{{"own", ParseRequest}, {"fastjson", parseRequestFastjson}, {"fastjson-floor", parseFastjsonFloor}} {
		for _, bc := range []struct{ name, body string }{
			{"body=valid", body(qStation, qToken, qURL)},
			{"body=escaped", body(qStation, q(`\u0041validDriverToken1234567`), q(`https:\/\/example.com\/cb`))},
			{"body=unknown-keys", `{"a":1,"b":{"c":[1,2]},` + body(qStation, qToken, qURL)[1:]},
			{"body=invalid", body(q("nope"), q("short"), q("ftp://x"))},
		} {
			b.Run(bc.name+"/impl="+impl.name, func(b *testing.B) {
				buf := []byte(bc.body)
				b.ReportAllocs()
				b.SetBytes(int64(len(buf)))
				for b.Loop() {
					impl.f(buf)
				}
			})
		}
	}
}

// parseFastjsonFloor is the least any fastjson-based ParseRequest must do:
// parse, read the three strings, copy them out, validate them. It checks
// neither strictness, nor depth, nor duplicates: a lower bound on its cost.
func parseFastjsonFloor(body []byte) (Request, []FieldError) {
	st := getFJ()
	defer putFJ(st)
	v, err := st.p.ParseBytes(body)
	if err != nil {
		return Request{}, []FieldError{{Field: FieldBody, Message: "body is not valid JSON"}}
	}
	a, b, c := v.GetStringBytes(FieldStationID), v.GetStringBytes(FieldDriverToken), v.GetStringBytes(FieldCallbackURL)
	all := string(a) + string(b) + string(c) // one allocation
	req := Request{StationID: all[:len(a)], DriverToken: all[len(a) : len(a)+len(b)], CallbackURL: all[len(a)+len(b):]}
	return req, req.Validate()
}

// messageDiff describes how the messages of got differ from want, "" if not.
func messageDiff(want, got []FieldError) string {
	if slices.Equal(want, got) {
		return ""
	}
	return fmt.Sprintf("%q -> %q", want, got)
}

// TestFastjsonValidateGap pins what FuzzParseRequestFastjson found in
// fastjson v1.6.10: Validate checks a string for control characters only after
// its last escape, so a raw U+0001 before "\b" passes; ParseRequest refuses it.
func TestFastjsonValidateGap(t *testing.T) {
	b := []byte("{\"\":\"\x01\\b\"}")
	if err := fastjson.ValidateBytes(b); err != nil {
		t.Fatalf("fastjson.Validate now refuses %q: %v", b, err)
	}
	if _, errs := ParseRequest(b); len(errs) != 1 || errs[0].Field != FieldBody {
		t.Fatalf("ParseRequest(%q) = %q, want one body error", b, errs)
	}
}

// FuzzParseRequestFastjson checks that parseRequestFastjson finds the same
// fields and the same request as ParseRequest on any input. Run with -fuzz,
// it finds the gap of TestFastjsonValidateGap within seconds.
func FuzzParseRequestFastjson(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		own, ownErrs := ParseRequest(b)
		got, errs := parseRequestFastjson(b)
		if own != got {
			t.Fatalf("request = %#v, ParseRequest = %#v", got, own)
		}
		if len(errs) != len(ownErrs) {
			t.Fatalf("errors = %q, ParseRequest = %q", errs, ownErrs)
		}
		for i := range errs {
			if errs[i].Field != ownErrs[i].Field {
				t.Fatalf("errors = %q, ParseRequest = %q", errs, ownErrs)
			}
		}
	})
}
