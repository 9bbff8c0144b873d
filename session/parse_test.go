package session

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

const (
	validStation = "123e4567-e89b-12d3-a456-426614174000"
	validToken   = "validDriverToken1234567"
	validURL     = "https://webhook.site/a02530e4-62e6-433b-ae31-d1392e823f12"
)

// body builds a request body from raw JSON values (already quoted or not);
// an empty value leaves its key out.
func body(station, token, callback string) string {
	var parts []string
	if station != "" {
		parts = append(parts, `"station_id":`+station)
	}
	if token != "" {
		parts = append(parts, `"driver_token":`+token)
	}
	if callback != "" {
		parts = append(parts, `"callback_url":`+callback)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func q(s string) string { return `"` + s + `"` }

var (
	qStation = q(validStation)
	qToken   = q(validToken)
	qURL     = q(validURL)
	validReq = Request{StationID: validStation, DriverToken: validToken, CallbackURL: validURL}
)

type parseCase struct {
	name   string
	body   string
	want   *Request // checked when not nil
	fields []string // the FieldError.Field of every error, in order; nil: valid
	msgs   []string // when not nil, the exact messages
}

var parseCases = []parseCase{
	// From the earlier implementation.
	{name: "valid", body: body(qStation, qToken, qURL), want: &validReq},
	{name: "missing station_id", body: body("", qToken, qURL),
		fields: []string{"station_id"}, msgs: []string{"station_id is missing"}},
	{name: "short station_id", body: body(q("123e4567-e89b-12d3-a456-42661417400"), qToken, qURL),
		fields: []string{"station_id"}, msgs: []string{"station_id is not a valid uuid"}},
	{name: "missing driver_token", body: body(qStation, "", qURL),
		fields: []string{"driver_token"}, msgs: []string{"driver_token is missing"}},
	{name: "token valid", body: body(qStation, q("valid"), qURL),
		fields: []string{"driver_token"}, msgs: []string{"driver_token must be 20 to 80 characters long"}},
	{name: "token 135 chars", body: body(qStation, q(strings.Repeat("a", 135)), qURL),
		fields: []string{"driver_token"}, msgs: []string{"driver_token must be 20 to 80 characters long"}},
	{name: "token bad char", body: body(qStation, q("validDriverToken1234567!"), qURL),
		fields: []string{"driver_token"}, msgs: []string{"driver_token may only contain A-Z a-z 0-9 - . _ ~"}},
	{name: "missing callback_url", body: body(qStation, qToken, ""),
		fields: []string{"callback_url"}, msgs: []string{"callback_url is missing"}},
	{name: "callback_url without scheme", body: body(qStation, qToken, q("webhook.site/a02530e4")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must be an absolute http or https URL"}},

	// station_id
	{name: "uppercase uuid", body: body(q(strings.ToUpper(validStation)), qToken, qURL),
		want: &Request{StationID: strings.ToUpper(validStation), DriverToken: validToken, CallbackURL: validURL}},
	{name: "uuid v7 accepted", body: body(q("01890a5d-ac96-774b-bcce-b302099a8057"), qToken, qURL)},
	{name: "uuid without hyphens", body: body(q("123e4567e89b12d3a456426614174000"), qToken, qURL),
		fields: []string{"station_id"}},
	{name: "uuid misplaced hyphen", body: body(q("123e456-7e89b-12d3-a456-426614174000"), qToken, qURL),
		fields: []string{"station_id"}},
	{name: "uuid non-hex", body: body(q("123e4567-e89b-12d3-a456-42661417400g"), qToken, qURL),
		fields: []string{"station_id"}},
	{name: "uuid in braces", body: body(q("{123e4567-e89b-12d3-a456-426614174000}"), qToken, qURL),
		fields: []string{"station_id"}},
	{name: "empty station_id", body: body(q(""), qToken, qURL),
		fields: []string{"station_id"}, msgs: []string{"station_id is not a valid uuid"}},

	// driver_token
	{name: "token 20 chars", body: body(qStation, q(strings.Repeat("x", 20)), qURL)},
	{name: "token 80 chars", body: body(qStation, q(strings.Repeat("x", 80)), qURL)},
	{name: "token 19 chars", body: body(qStation, q(strings.Repeat("x", 19)), qURL), fields: []string{"driver_token"}},
	{name: "token 81 chars", body: body(qStation, q(strings.Repeat("x", 81)), qURL), fields: []string{"driver_token"}},
	{name: "token every allowed char", body: body(qStation, q("AZaz09-._~AZaz09-._~"), qURL),
		want: &Request{StationID: validStation, DriverToken: "AZaz09-._~AZaz09-._~", CallbackURL: validURL}},
	{name: "token short and bad char", body: body(qStation, q("ab cd"), qURL),
		fields: []string{"driver_token", "driver_token"},
		msgs:   []string{"driver_token must be 20 to 80 characters long", "driver_token may only contain A-Z a-z 0-9 - . _ ~"}},
	{name: "token non-ascii", body: body(qStation, q("validDriverToken12345é"), qURL), fields: []string{"driver_token"}},
	{name: "token empty", body: body(qStation, q(""), qURL), fields: []string{"driver_token"}},
	{name: "token escaped \\u0041", body: body(qStation, q(`\u0041validDriverToken1234567`), qURL),
		want: &Request{StationID: validStation, DriverToken: "AvalidDriverToken1234567", CallbackURL: validURL}},
	{name: "token escaped slash is a bad char", body: body(qStation, q(`validDriverToken1234\/`), qURL),
		fields: []string{"driver_token"}, msgs: []string{"driver_token may only contain A-Z a-z 0-9 - . _ ~"}},
	{name: "token escaped newline", body: body(qStation, q(`validDriverToken1234567\n`), qURL),
		fields: []string{"driver_token"}},

	// callback_url
	{name: "http url", body: body(qStation, qToken, q("http://example.com"))},
	{name: "uppercase scheme", body: body(qStation, qToken, q("HTTPS://example.com/cb"))},
	{name: "url with port query fragment userinfo", body: body(qStation, qToken, q("https://u:p@example.com:8443/cb?a=b#f"))},
	{name: "ipv6 host", body: body(qStation, qToken, q("http://[::1]:8080/cb"))},
	{name: "escaped slashes in url", body: body(qStation, qToken, q(`https:\/\/example.com\/cb`)),
		want: &Request{StationID: validStation, DriverToken: validToken, CallbackURL: "https://example.com/cb"}},
	{name: "ftp url", body: body(qStation, qToken, q("ftp://example.com/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must be an absolute http or https URL"}},
	{name: "http without host", body: body(qStation, qToken, q("http:///path")), fields: []string{"callback_url"}},
	{name: "http with port only", body: body(qStation, qToken, q("http://:8080/path")), fields: []string{"callback_url"}},
	{name: "http opaque", body: body(qStation, qToken, q("http:example.com")), fields: []string{"callback_url"}},
	{name: "bad port", body: body(qStation, qToken, q("http://example.com:port/")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},

	// callback_url port (issue 14, D): refused at the POST, never retried.
	{name: "port 0", body: body(qStation, qToken, q("https://example.com:0/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port 65536", body: body(qStation, qToken, q("https://example.com:65536/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port past uint64", body: body(qStation, qToken, q("https://example.com:99999999999999999999999/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port 1", body: body(qStation, qToken, q("https://example.com:1/cb"))},
	{name: "port 65535", body: body(qStation, qToken, q("https://example.com:65535"))},
	{name: "port with leading zeros", body: body(qStation, qToken, q("http://example.com:0080/cb"))},
	{name: "port 00000", body: body(qStation, qToken, q("http://example.com:00000/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port empty", body: body(qStation, qToken, q("http://example.com:/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port negative", body: body(qStation, qToken, q("http://example.com:-1/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port with sign", body: body(qStation, qToken, q("http://example.com:+80/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "two ports", body: body(qStation, qToken, q("http://example.com:80:80/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port 0 uppercase scheme, before query", body: body(qStation, qToken, q("HTTPS://example.com:0?a=b")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "port 0 before fragment", body: body(qStation, qToken, q("http://example.com:0#f")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "ipv6 port 0", body: body(qStation, qToken, q("http://[::1]:0/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "ipv6 port 70000", body: body(qStation, qToken, q("http://[2001:db8::1]:70000/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "ipv6 without port", body: body(qStation, qToken, q("http://[2001:db8::1]/cb"))},
	{name: "userinfo colon is not a port", body: body(qStation, qToken, q("https://user:0@example.com/cb"))},
	{name: "userinfo and port 0", body: body(qStation, qToken, q("https://user:pw@example.com:0/cb")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url port must be 1-65535"}},
	{name: "colons after the authority are not a port",
		body: body(qStation, qToken, q("https://example.com/a:0?b=c:0#d:0"))},
	{name: "colon in query without path", body: body(qStation, qToken, q("https://example.com?x=:0"))},
	{name: "port 0 and no host", body: body(qStation, qToken, q("http://:0/cb")),
		fields: []string{"callback_url", "callback_url"},
		msgs:   []string{"callback_url port must be 1-65535", "callback_url must be an absolute http or https URL"}},
	{name: "port 0 and not http", body: body(qStation, qToken, q("ftp://example.com:0/")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must be an absolute http or https URL"}},
	{name: "port 0 and a space", body: body(qStation, qToken, q("http://example.com:0/a b")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must not contain spaces, control or non-ASCII characters"}},
	{name: "port 0 with other fields wrong", body: body(q("nope"), qToken, q("http://example.com:0/")),
		fields: []string{"station_id", "callback_url"},
		msgs:   []string{"station_id is not a valid uuid", "callback_url port must be 1-65535"}},
	{name: "url 2048 bytes", body: body(qStation, qToken, q("https://example.com/"+strings.Repeat("a", 2048-20)))},
	{name: "url 2049 bytes", body: body(qStation, qToken, q("https://example.com/"+strings.Repeat("a", 2049-20))),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must be at most 2048 bytes"}},
	{name: "url too long and not http", body: body(qStation, qToken, q("ftp://example.com/"+strings.Repeat("a", 2100))),
		fields: []string{"callback_url", "callback_url"}},
	{name: "url with space", body: body(qStation, qToken, q("https://example.com/a b")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must not contain spaces, control or non-ASCII characters"}},
	{name: "url with escaped tab", body: body(qStation, qToken, q(`https://example.com/\t`)), fields: []string{"callback_url"}},
	{name: "url non-ascii", body: body(qStation, qToken, q("https://exämple.com/")), fields: []string{"callback_url"}},
	{name: "empty url", body: body(qStation, qToken, q("")),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must be an absolute http or https URL"}},

	// several problems
	{name: "all three wrong", body: body(q("nope"), q("short"), q("ftp://x")),
		fields: []string{"station_id", "driver_token", "callback_url"},
		want:   &Request{StationID: "nope", DriverToken: "short", CallbackURL: "ftp://x"}},
	{name: "empty object", body: `{}`,
		fields: []string{"station_id", "driver_token", "callback_url"},
		msgs:   []string{"station_id is missing", "driver_token is missing", "callback_url is missing"}},

	// the body itself
	{name: "malformed json", body: `{"station_id": "abc"`, fields: []string{"body"},
		msgs: []string{"body is not valid JSON: unexpected end of input"}},
	{name: "missing colon", body: `{"station_id" "abc"}`, fields: []string{"body"}},
	{name: "trailing comma", body: `{"station_id":"abc",}`, fields: []string{"body"}},
	{name: "single quotes", body: `{'station_id':'abc'}`, fields: []string{"body"}},
	{name: "array body", body: `[` + body(qStation, qToken, qURL) + `]`, fields: []string{"body"},
		msgs: []string{"body must be a JSON object"}},
	{name: "string body", body: `"hello"`, fields: []string{"body"}, msgs: []string{"body must be a JSON object"}},
	{name: "empty body", body: ``, fields: []string{"body"}, msgs: []string{"body is empty"}},
	{name: "whitespace body", body: " \n\t\r", fields: []string{"body"}, msgs: []string{"body is empty"}},
	{name: "null body", body: `null`, fields: []string{"body"}, msgs: []string{"body must be a JSON object"}},
	{name: "trailing garbage", body: body(qStation, qToken, qURL) + `x`, fields: []string{"body"},
		msgs: []string{"body has data after the JSON object"}},
	{name: "two objects", body: body(qStation, qToken, qURL) + `{}`, fields: []string{"body"}},
	{name: "trailing whitespace ok", body: "\n " + body(qStation, qToken, qURL) + " \r\n\t", want: &validReq},
	{name: "non-utf8 in string", body: body(qStation, q("validDriverToken\xff1234567"), qURL), fields: []string{"body"},
		msgs: []string{"body is not valid UTF-8"}},
	{name: "non-utf8 in ignored key", body: `{"x\xc3":1,` + body(qStation, qToken, qURL)[1:], fields: []string{"body"}},
	{name: "raw control char in string", body: body(qStation, q("validDriverToken\x011234567"), qURL), fields: []string{"body"}},
	{name: "bad escape", body: body(qStation, q(`validDriverToken\x1234567`), qURL), fields: []string{"body"}},
	{name: "short unicode escape", body: body(qStation, q(`validDriverToken\u12`), qURL), fields: []string{"body"}},
	{name: "byte order mark", body: "\xef\xbb\xbf" + body(qStation, qToken, qURL), fields: []string{"body"}},
	{name: "bad number in ignored key", body: `{"n":01,` + body(qStation, qToken, qURL)[1:], fields: []string{"body"}},
	{name: "bad literal in ignored key", body: `{"n":nul,` + body(qStation, qToken, qURL)[1:], fields: []string{"body"}},
	{name: "depth at the limit", body: `{"n":` + strings.Repeat("[", maxDepth-1) + strings.Repeat("]", maxDepth-1) + "," +
		body(qStation, qToken, qURL)[1:], want: &validReq},
	{name: "depth over the limit", body: `{"n":` + strings.Repeat("{\"a\":", maxDepth) + "1" + strings.Repeat("}", maxDepth) + "," +
		body(qStation, qToken, qURL)[1:], fields: []string{"body"}, msgs: []string{"body is nested too deeply"}},
	{name: "too deep", body: `{"n":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, fields: []string{"body"},
		msgs: []string{"body is nested too deeply"}},

	// duplicate keys
	{name: "duplicate station_id", body: `{"station_id":` + qStation + `,` + body(qStation, qToken, qURL)[1:],
		fields: []string{"station_id"}, msgs: []string{`duplicate key "station_id"`}},
	{name: "duplicate station_id escaped", body: `{"station\u005fid":` + qStation + `,` + body(qStation, qToken, qURL)[1:],
		fields: []string{"station_id"}, msgs: []string{`duplicate key "station_id"`}},
	{name: "duplicate unknown key", body: `{"x":1,"y":2,"x":[3],` + body(qStation, qToken, qURL)[1:],
		fields: []string{"body"}, msgs: []string{`duplicate key "x"`}},
	{name: "duplicate unknown key escaped", body: `{"x":1,"\u0078":2,"x":3,` + body(qStation, qToken, qURL)[1:],
		fields: []string{"body"}, msgs: []string{`duplicate key "x"`}},
	{name: "duplicates and bad fields", body: `{"a":1,"a":2,"driver_token":"x","driver_token":"y","station_id":"s"}`,
		fields: []string{"body", "station_id", "driver_token", "callback_url"},
		msgs: []string{`duplicate key "a"`, "station_id is not a valid uuid", `duplicate key "driver_token"`,
			"callback_url is missing"}},
	{name: "same name nested is not a duplicate",
		body: `{"o":{"station_id":1,"station_id":2},` + body(qStation, qToken, qURL)[1:], want: &validReq},
	{name: "keys are case-sensitive", body: `{"STATION_ID":"x",` + body(qStation, qToken, qURL)[1:], want: &validReq},

	// wrong types
	{name: "number station_id", body: body(`123`, qToken, qURL),
		fields: []string{"station_id"}, msgs: []string{"station_id must be a string"}},
	{name: "null driver_token", body: body(qStation, `null`, qURL),
		fields: []string{"driver_token"}, msgs: []string{"driver_token must be a string"}},
	{name: "object callback_url", body: body(qStation, qToken, `{"url":"https://example.com"}`),
		fields: []string{"callback_url"}, msgs: []string{"callback_url must be a string"}},
	{name: "bool station_id", body: body(`true`, qToken, qURL), fields: []string{"station_id"}},
	{name: "array driver_token", body: body(qStation, `["a"]`, qURL), fields: []string{"driver_token"}},
	{name: "all wrong types", body: body(`1.5e3`, `false`, `[]`),
		fields: []string{"station_id", "driver_token", "callback_url"}},

	// ignored keys
	{name: "unknown keys ignored",
		body: `{"a":1,"b":-0.5e+10,"c":true,"d":false,"e":null,"f":"s\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800",` +
			`"g":{"h":[1,{"i":[]},{}],"j":{}},"k":[[],[[]]],` + body(qStation, qToken, qURL)[1:],
		want: &validReq},
	{name: "whitespace everywhere", body: " {\n \"station_id\" :\t" + qStation + " ,\r\n\"driver_token\" : " + qToken +
		" , \"callback_url\" : " + qURL + " } ", want: &validReq},
}

func TestParseRequest(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ParseRequest([]byte(tc.body))
			var fields, msgs []string
			for _, e := range errs {
				fields = append(fields, e.Field)
				msgs = append(msgs, e.Message)
			}
			if !slices.Equal(fields, tc.fields) {
				t.Fatalf("fields = %q, want %q (messages %q)", fields, tc.fields, msgs)
			}
			if tc.fields == nil && errs != nil {
				t.Fatalf("errors = %#v, want nil", errs)
			}
			if tc.msgs != nil && !slices.Equal(msgs, tc.msgs) {
				t.Fatalf("messages = %q, want %q", msgs, tc.msgs)
			}
			if tc.want != nil && got != *tc.want {
				t.Fatalf("request = %#v, want %#v", got, *tc.want)
			}
			if errs == nil {
				if verrs := got.Validate(); verrs != nil {
					t.Fatalf("Validate() = %v after ParseRequest accepted", verrs)
				}
			}
		})
	}
}

// TestParseRequestCopies checks that the returned strings do not alias the
// body, which fasthttp reuses.
func TestParseRequestCopies(t *testing.T) {
	b := []byte(body(qStation, qToken, qURL))
	got, errs := ParseRequest(b)
	if errs != nil {
		t.Fatal(errs)
	}
	for i := range b {
		b[i] = 'X'
	}
	if got != validReq {
		t.Fatalf("request changed with the body: %#v", got)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		req    Request
		fields []string
	}{
		{"valid", validReq, nil},
		{"zero", Request{}, []string{"station_id", "driver_token", "callback_url"}},
		{"bad token", Request{StationID: validStation, DriverToken: "a b", CallbackURL: validURL},
			[]string{"driver_token", "driver_token"}},
		{"port 0", Request{StationID: validStation, DriverToken: validToken, CallbackURL: "http://example.com:0/"},
			[]string{"callback_url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fields []string
			for _, e := range tc.req.Validate() {
				fields = append(fields, e.Field)
			}
			if !slices.Equal(fields, tc.fields) {
				t.Fatalf("fields = %q, want %q", fields, tc.fields)
			}
		})
	}
}

func TestJoinFieldErrors(t *testing.T) {
	for _, tc := range []struct {
		errs []FieldError
		want string
	}{
		{nil, ""},
		{[]FieldError{{"station_id", "a"}}, "a"},
		{[]FieldError{{"station_id", "a"}, {"body", "b"}, {"callback_url", "c"}}, "a; b; c"},
	} {
		if got := JoinFieldErrors(tc.errs); got != tc.want {
			t.Errorf("JoinFieldErrors(%v) = %q, want %q", tc.errs, got, tc.want)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := slices.Clone(b)
		req, errs := ParseRequest(b)
		if !slices.Equal(b, orig) {
			t.Fatal("ParseRequest changed its input")
		}
		for _, e := range errs {
			switch e.Field {
			case FieldStationID, FieldDriverToken, FieldCallbackURL, FieldBody:
			default:
				t.Fatalf("unexpected field %q", e.Field)
			}
			if e.Message == "" {
				t.Fatal("empty message")
			}
		}
		if errs != nil {
			// A syntax error must be one encoding/json agrees with.
			if len(errs) == 1 && errs[0].Field == FieldBody && !strings.HasPrefix(errs[0].Message, "duplicate key") &&
				errs[0].Message != msgBodyTooDeep &&
				json.Valid(b) && utf8.Valid(b) && strings.HasPrefix(strings.TrimLeft(string(b), " \t\r\n"), "{") {
				t.Fatalf("body error %q on a valid JSON object", errs[0].Message)
			}
			return
		}
		if verrs := req.Validate(); verrs != nil {
			t.Fatalf("accepted, but Validate() = %v", verrs)
		}
		if !IsUUID(req.StationID) || !isTokenChars(req.DriverToken) || !utf8.ValidString(req.CallbackURL) {
			t.Fatalf("accepted a request outside the charsets: %#v", req)
		}
		// The sender can connect to what was accepted: net/url finds a port
		// of 1..65535 or none (and no colon without one).
		u, err := url.Parse(req.CallbackURL)
		if err != nil {
			t.Fatalf("accepted %q, but net/url says %v", req.CallbackURL, err)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				t.Fatalf("accepted %q with port %q", req.CallbackURL, p)
			}
		} else if strings.HasSuffix(u.Host, ":") {
			t.Fatalf("accepted %q with an empty port", req.CallbackURL)
		}
		// encoding/json must read the same three strings. Decode into a map,
		// not a struct: struct fields match keys case-insensitively, and
		// ParseRequest matches them exactly (and ignores "STATION_ID").
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("accepted, but encoding/json says %v", err)
		}
		var want Request
		for key, dst := range map[string]*string{
			FieldStationID: &want.StationID, FieldDriverToken: &want.DriverToken, FieldCallbackURL: &want.CallbackURL,
		} {
			if err := json.Unmarshal(m[key], dst); err != nil {
				t.Fatalf("accepted, but encoding/json cannot read %s: %v", key, err)
			}
		}
		if req != want {
			t.Fatalf("ParseRequest = %#v, encoding/json = %#v", req, want)
		}
		// A struct agrees whenever no other key folds to a known one.
		var s Request
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("accepted, but encoding/json into a struct says %v", err)
		}
		folds := false
		for key := range m {
			for _, name := range fieldNames {
				if key != name && strings.EqualFold(key, name) {
					folds = true
				}
			}
		}
		if !folds && s != req {
			t.Fatalf("ParseRequest = %#v, encoding/json struct = %#v", req, s)
		}
	})
}

func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"body=valid", body(qStation, qToken, qURL)},
		{"body=escaped", body(qStation, q(`\u0041validDriverToken1234567`), q(`https:\/\/example.com\/cb`))},
		{"body=unknown-keys", `{"a":1,"b":{"c":[1,2]},` + body(qStation, qToken, qURL)[1:]},
		{"body=invalid", body(q("nope"), q("short"), q("ftp://x"))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := []byte(bc.body)
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				ParseRequest(buf)
			}
		})
	}
}

// TestParseRequestAllocs holds the budget for an accepted request: one
// allocation for the three strings and one for net/url's URL.
func TestParseRequestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	const budget = 2
	buf := []byte(body(qStation, qToken, qURL))
	allocs := testing.AllocsPerRun(100, func() {
		if _, errs := ParseRequest(buf); errs != nil {
			t.Fatal(errs)
		}
	})
	if allocs > budget {
		t.Fatalf("ParseRequest allocates %v times per accepted request, budget %d", allocs, budget)
	}
}
