package session

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Field names reported in FieldError.Field.
const (
	FieldStationID   = "station_id"
	FieldDriverToken = "driver_token"
	FieldCallbackURL = "callback_url"
	// FieldBody is for problems with the JSON itself (syntax, invalid UTF-8,
	// not an object, a duplicated unknown key).
	FieldBody = "body"
)

// Limits on the request fields (DESIGN.md, "Public API").
const (
	MinDriverTokenLen = 20   // characters
	MaxDriverTokenLen = 80   // characters
	MaxCallbackURLLen = 2048 // bytes
)

// maxDepth bounds the nesting of ignored values (the top-level object is
// depth 1), so that skipping them never recurses without limit. No real client
// nests that deep; encoding/json's limit is 10000.
const maxDepth = 128

// FieldError is one problem with a request; Field is "station_id",
// "driver_token", "callback_url", or "body" for problems with the JSON itself.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// JoinFieldErrors joins the messages of errs with "; ", the form of the
// "error" member of a 400 answer. Each message names its field.
func JoinFieldErrors(errs []FieldError) string {
	switch len(errs) {
	case 0:
		return ""
	case 1:
		return errs[0].Message
	}
	n := 2 * (len(errs) - 1)
	for _, e := range errs {
		n += len(e.Message)
	}
	var sb strings.Builder
	sb.Grow(n)
	for i, e := range errs {
		if i > 0 {
			sb.WriteString("; ")
		}
		sb.WriteString(e.Message)
	}
	return sb.String()
}

// The messages, fixed so that a valid-but-wrong request allocates nothing
// beyond its error slice.
const (
	msgStationMissing   = "station_id is missing"
	msgStationType      = "station_id must be a string"
	msgStationUUID      = "station_id is not a valid uuid"
	msgTokenMissing     = "driver_token is missing"
	msgTokenType        = "driver_token must be a string"
	msgTokenLength      = "driver_token must be 20 to 80 characters long"
	msgTokenChars       = "driver_token may only contain A-Z a-z 0-9 - . _ ~"
	msgURLMissing       = "callback_url is missing"
	msgURLType          = "callback_url must be a string"
	msgURLLength        = "callback_url must be at most 2048 bytes"
	msgURLChars         = "callback_url must not contain spaces, control or non-ASCII characters"
	msgURLAbsolute      = "callback_url must be an absolute http or https URL"
	msgURLPort          = "callback_url port must be 1-65535"
	msgBodyEmpty        = "body is empty"
	msgBodyUTF8         = "body is not valid UTF-8"
	msgBodyNotObject    = "body must be a JSON object"
	msgBodyTrailing     = "body has data after the JSON object"
	msgBodyEOF          = "body is not valid JSON: unexpected end of input"
	msgBodyTooDeep      = "body is nested too deeply"
	msgBodyInvalidStart = "body is not valid JSON: "
)

// The three known keys, in the order their problems are reported.
const (
	idxStation = iota
	idxToken
	idxURL
	numFields
)

var fieldNames = [numFields]string{FieldStationID, FieldDriverToken, FieldCallbackURL}

var dupMessages = [numFields]string{
	`duplicate key "station_id"`,
	`duplicate key "driver_token"`,
	`duplicate key "callback_url"`,
}

// ParseRequest decodes and validates a POST body and returns every problem at
// once (nil slice when valid).
//
// The body must be one JSON object in valid UTF-8. Keys match exactly (case
// matters, unlike encoding/json's struct decoding); unknown keys are ignored,
// whatever their value; a key that appears twice at the top level is an error
// (reported on its field when it is one of the three, else on "body"), and the
// value of a duplicated field is not validated further. When the JSON cannot
// be parsed the only error is that one, on "body", and the Request is zero.
// Otherwise body errors come first, then station_id, driver_token and
// callback_url, and the Request holds every field that was a string.
//
// The returned strings never alias body (the caller may reuse it): they share
// one allocation. ParseRequest never panics.
func ParseRequest(body []byte) (Request, []FieldError) {
	if !utf8.Valid(body) {
		return Request{}, []FieldError{{Field: FieldBody, Message: msgBodyUTF8}}
	}
	p := parser{b: body}
	if !p.parseTopLevel() {
		return Request{}, []FieldError{{Field: FieldBody, Message: p.err}}
	}

	// Copy the string values out of body, all into one allocation; decoding
	// escapes only shortens a string, so the raw lengths bound the size.
	var req Request
	total := 0
	for f := range numFields {
		if p.kind[f] == kindString {
			total += p.val[f].end - p.val[f].start
		}
	}
	if total > 0 {
		var sb strings.Builder
		sb.Grow(total)
		var bounds [numFields][2]int
		for f := range numFields {
			if p.kind[f] != kindString {
				continue
			}
			bounds[f][0] = sb.Len()
			sp := p.val[f]
			if sp.escaped {
				writeUnescaped(&sb, body[sp.start:sp.end])
			} else {
				sb.Write(body[sp.start:sp.end])
			}
			bounds[f][1] = sb.Len()
		}
		s := sb.String()
		req.StationID = s[bounds[idxStation][0]:bounds[idxStation][1]]
		req.DriverToken = s[bounds[idxToken][0]:bounds[idxToken][1]]
		req.CallbackURL = s[bounds[idxURL][0]:bounds[idxURL][1]]
	}

	errs := p.bodyErrs
	for f := range numFields {
		switch {
		case p.dup[f]:
			errs = append(errs, FieldError{Field: fieldNames[f], Message: dupMessages[f]})
		case p.kind[f] == kindAbsent:
			errs = append(errs, FieldError{Field: fieldNames[f], Message: missingMessages[f]})
		case p.kind[f] == kindOther:
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

var missingMessages = [numFields]string{msgStationMissing, msgTokenMissing, msgURLMissing}

var typeMessages = [numFields]string{msgStationType, msgTokenType, msgURLType}

// Validate checks the three fields of r and returns every problem, in the
// order station_id, driver_token, callback_url (nil when r is valid). An empty
// field is invalid, not missing: Validate cannot tell the two apart.
func (r Request) Validate() []FieldError {
	var errs []FieldError
	errs = appendStationIDErrors(errs, r.StationID)
	errs = appendDriverTokenErrors(errs, r.DriverToken)
	errs = appendCallbackURLErrors(errs, r.CallbackURL)
	return errs
}

func appendStationIDErrors(errs []FieldError, s string) []FieldError {
	if !IsUUID(s) {
		errs = append(errs, FieldError{Field: FieldStationID, Message: msgStationUUID})
	}
	return errs
}

func appendDriverTokenErrors(errs []FieldError, s string) []FieldError {
	if n := utf8.RuneCountInString(s); n < MinDriverTokenLen || n > MaxDriverTokenLen {
		errs = append(errs, FieldError{Field: FieldDriverToken, Message: msgTokenLength})
	}
	if !isTokenChars(s) {
		errs = append(errs, FieldError{Field: FieldDriverToken, Message: msgTokenChars})
	}
	return errs
}

func appendCallbackURLErrors(errs []FieldError, s string) []FieldError {
	cheapOK := true
	if len(s) > MaxCallbackURLLen {
		errs = append(errs, FieldError{Field: FieldCallbackURL, Message: msgURLLength})
		cheapOK = false
	}
	if !isPrintableASCII(s) {
		errs = append(errs, FieldError{Field: FieldCallbackURL, Message: msgURLChars})
		cheapOK = false
	}
	// url.Parse runs only once the cheap checks pass; the scheme prefix is
	// checked in any case, so that a bad scheme is reported with the rest.
	if !hasHTTPPrefix(s) {
		return append(errs, FieldError{Field: FieldCallbackURL, Message: msgURLAbsolute})
	}
	if !cheapOK {
		return errs
	}
	// A port that no connection can use (0, above 65535, not a number, or a
	// colon with nothing after it) is refused here, not retried for days by
	// the sender. The rest of the URL is then checked without it, so that
	// each problem is reported once.
	rest := s
	if colon, end := portSpan(s); colon >= 0 && !validPort(s[colon+1:end]) {
		errs = append(errs, FieldError{Field: FieldCallbackURL, Message: msgURLPort})
		rest = s[:colon] + s[end:]
	}
	if !parsesWithHost(rest) {
		errs = append(errs, FieldError{Field: FieldCallbackURL, Message: msgURLAbsolute})
	}
	return errs
}

// portSpan finds the port in s, which starts with "http://" or "https://"
// (either case): s[colon] is the ':' before it and s[colon+1:end] the port,
// which may be empty. colon is -1 when the authority has no port. It splits the
// authority the way net/url does: it ends at the first '/', '?' or '#',
// userinfo ends at its last '@', and the port follows the host's first ':'
// (the ':' right after ']' for an IP literal), so that "host:80:80" has the
// port "80:80", as net/url reads it.
func portSpan(s string) (colon, end int) {
	start := len("http://")
	if s[4] != ':' {
		start = len("https://")
	}
	end = len(s)
	if i := strings.IndexAny(s[start:], "/?#"); i >= 0 {
		end = start + i
	}
	host := start
	if i := strings.LastIndexByte(s[start:end], '@'); i >= 0 {
		host = start + i + 1
	}
	if host < end && s[host] == '[' {
		i := strings.IndexByte(s[host:end], ']')
		if i < 0 || host+i+1 >= end || s[host+i+1] != ':' {
			return -1, end
		}
		return host + i + 1, end
	}
	i := strings.IndexByte(s[host:end], ':')
	if i < 0 {
		return -1, end
	}
	return host + i, end
}

// validPort reports whether p is a TCP port a connection can use: decimal
// digits (leading zeros allowed, as net.Dial reads them) worth 1 to 65535.
func validPort(p string) bool {
	if p == "" {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return false
		}
	}
	return n >= 1
}

// IsUUID reports whether s is a UUID in 8-4-4-4-12 hex form, either case, any
// version.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if hexVal(s[i]) < 0 {
				return false
			}
		}
	}
	return true
}

// tokenChar[c] is true for the bytes a driver token may hold.
var tokenChar = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~" {
		t[c] = true
	}
	return t
}()

func isTokenChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tokenChar[s[i]] {
			return false
		}
	}
	return true
}

// isPrintableASCII reports whether s holds only 0x21..0x7e: no spaces, no
// control characters, nothing outside ASCII (a URI is ASCII; other characters
// must be percent-encoded, and host names punycoded).
func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func hasHTTPPrefix(s string) bool {
	return hasPrefixFold(s, "http://") || hasPrefixFold(s, "https://")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// parsesWithHost reports whether net/url accepts s as an absolute http or
// https URL with a non-empty host name.
func parsesWithHost(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return false
	}
	return u.Opaque == "" && u.Hostname() != ""
}

func hexVal(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// valueKind is what a known key held.
type valueKind uint8

const (
	kindAbsent valueKind = iota // key not seen
	kindString                  // a JSON string; its span is in parser.val
	kindOther                   // any other JSON value (number, null, object...)
)

// span is the raw content of a JSON string, between its quotes.
type span struct {
	start, end int
	escaped    bool // contains a backslash escape
}

// Why a hand-written parser and not a library (issue 13, item 7):
// github.com/valyala/fastjson v1.6.10 was measured against it, interleaved in
// one run on the bodies of BenchmarkParseRequest (commit a718903,
// session/parse_fastjson_test.go: `go test -run x -bench ParseRequestImpl
// -count 6 ./session`, then `benchstat -col /impl`). Time per parse, geomean
// +113% (valid body 882 ns -> 2086 ns, unknown keys 1.27 us -> 2.80 us,
// invalid fields 474 ns -> 1296 ns; a second run under heavier load +161%);
// allocations the same (2 per accepted request, 272 B: both copy the strings
// out the same way). Even its floor (parse and read three strings, with no
// strictness, depth or duplicate check) was +84%. And it cannot keep what
// ParseRequest promises:
//   - fastjson.Parser accepts 01, NaN, Inf, bad escapes and raw control
//     characters, so strictness takes a second pass with fastjson.Validate,
//     which recurses without a depth limit and, in v1.6.10, lets a raw control
//     character through when an escape follows it in the same string
//     ({"":"\x01\b"}; fuzzing the two against each other found it in seconds);
//   - its errors name no offset and quote up to 80 bytes of the body, where
//     the driver token may be, so the 13 syntax messages of the table would
//     all become "body is not valid JSON";
//   - Object.Visit keeps a lone surrogate escape as six characters where
//     encoding/json (and this parser) write U+FFFD, so keys and values must
//     be re-read raw (Value.MarshalTo) and decoded here anyway.
//
// parser scans one top-level JSON object out of b. It records where the
// values of the three known keys are and which keys repeat; every other value
// is checked for syntax and skipped. It never allocates for a body made only
// of the known keys with unescaped names.
//
// Invariants: b is valid UTF-8 (checked before parsing), so strings need no
// UTF-8 checks of their own; i only grows, and every index is checked against
// len(b) before use.
type parser struct {
	b   []byte
	i   int
	err string // the body error, once a method has returned false

	kind [numFields]valueKind
	val  [numFields]span
	dup  [numFields]bool

	// unknown holds the decoded unknown keys seen so far, and whether their
	// duplication has been reported. Created on the first unknown key.
	unknown  map[string]bool
	bodyErrs []FieldError
}

func (p *parser) fail(msg string) bool {
	p.err = msg
	return false
}

func (p *parser) eof() bool { return p.fail(msgBodyEOF) }

// unexpected reports the character at p.i as a syntax error.
func (p *parser) unexpected(context string) bool {
	if p.i >= len(p.b) {
		return p.eof()
	}
	r, _ := utf8.DecodeRune(p.b[p.i:])
	return p.fail(fmt.Sprintf("%sinvalid character %q %s at offset %d", msgBodyInvalidStart, r, context, p.i))
}

func (p *parser) skipWS() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// parseTopLevel parses the whole body: one object and nothing after it.
func (p *parser) parseTopLevel() bool {
	p.skipWS()
	if p.i >= len(p.b) {
		return p.fail(msgBodyEmpty)
	}
	if p.b[p.i] != '{' {
		// Say "not an object" only when it is some other JSON value.
		if !p.skipValue(1) {
			return false
		}
		return p.fail(msgBodyNotObject)
	}
	p.i++
	p.skipWS()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
	} else {
		for {
			if !p.member() {
				return false
			}
			p.skipWS()
			if p.i >= len(p.b) {
				return p.eof()
			}
			if p.b[p.i] == '}' {
				p.i++
				break
			}
			if p.b[p.i] != ',' {
				return p.unexpected("after object value")
			}
			p.i++
			p.skipWS()
		}
	}
	p.skipWS()
	if p.i < len(p.b) {
		return p.fail(msgBodyTrailing)
	}
	return true
}

// member parses one `"key": value` of the top-level object.
func (p *parser) member() bool {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return p.unexpected("looking for an object key")
	}
	key, ok := p.scanString()
	if !ok {
		return false
	}
	p.skipWS()
	if p.i >= len(p.b) || p.b[p.i] != ':' {
		return p.unexpected("after object key")
	}
	p.i++
	p.skipWS()

	raw := p.b[key.start:key.end]
	var name string // the decoded key, set only when it has escapes
	var f int
	if key.escaped {
		var sb strings.Builder
		sb.Grow(len(raw))
		writeUnescaped(&sb, raw)
		name = sb.String()
		f = knownField(name)
	} else {
		f = knownField(string(raw)) // no allocation: compared, not kept
	}

	if f < 0 {
		p.noteUnknownKey(raw, name, key.escaped)
		return p.skipValue(1)
	}
	if p.kind[f] != kindAbsent {
		p.dup[f] = true
	}
	if p.i < len(p.b) && p.b[p.i] == '"' {
		sp, ok := p.scanString()
		if !ok {
			return false
		}
		p.kind[f], p.val[f] = kindString, sp
		return true
	}
	p.kind[f] = kindOther
	return p.skipValue(1)
}

func knownField(key string) int {
	switch key {
	case FieldStationID:
		return idxStation
	case FieldDriverToken:
		return idxToken
	case FieldCallbackURL:
		return idxURL
	}
	return -1
}

// noteUnknownKey records an unknown top-level key and reports it, once, on
// "body" if it repeats. name is the decoded key when escaped is true.
func (p *parser) noteUnknownKey(raw []byte, name string, escaped bool) {
	if p.unknown == nil {
		p.unknown = make(map[string]bool)
	}
	var reported, seen bool
	if escaped {
		reported, seen = p.unknown[name]
	} else {
		reported, seen = p.unknown[string(raw)] // no allocation for a lookup
	}
	if seen && reported {
		return
	}
	if !escaped {
		name = string(raw)
	}
	p.unknown[name] = seen
	if seen {
		p.bodyErrs = append(p.bodyErrs, FieldError{Field: FieldBody, Message: "duplicate key " + quoteKey(name)})
	}
}

// quoteKey quotes a key for an error message, cut to a readable length.
func quoteKey(k string) string {
	const maxKey = 64
	if len(k) <= maxKey {
		return fmt.Sprintf("%q", k)
	}
	cut := maxKey
	for cut > 0 && !utf8.RuneStart(k[cut]) {
		cut--
	}
	return fmt.Sprintf("%q...", k[:cut])
}

// scanString checks the JSON string starting at p.i (an opening quote) and
// returns the span of its content. It does not decode it.
func (p *parser) scanString() (span, bool) {
	b := p.b
	i := p.i + 1
	sp := span{start: i}
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			sp.end = i
			p.i = i + 1
			return sp, true
		case c == '\\':
			sp.escaped = true
			if i+1 >= len(b) {
				return span{}, p.eof()
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(b) {
						return span{}, p.eof()
					}
					if hexVal(b[k]) < 0 {
						p.i = k
						return span{}, p.unexpected("in \\u escape")
					}
				}
				i += 6
			default:
				p.i = i + 1
				return span{}, p.unexpected("in string escape")
			}
		case c < 0x20:
			p.i = i
			return span{}, p.unexpected("in string")
		default:
			i++
		}
	}
	return span{}, p.eof()
}

// skipValue checks the JSON value at p.i and moves past it. depth is the
// nesting depth of the value's container.
func (p *parser) skipValue(depth int) bool {
	if p.i >= len(p.b) {
		return p.eof()
	}
	switch c := p.b[p.i]; c {
	case '"':
		_, ok := p.scanString()
		return ok
	case '{':
		return p.skipObject(depth + 1)
	case '[':
		return p.skipArray(depth + 1)
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return p.number()
	}
	return p.unexpected("looking for beginning of value")
}

func (p *parser) skipObject(depth int) bool {
	if depth > maxDepth {
		return p.fail(msgBodyTooDeep)
	}
	p.i++ // '{'
	p.skipWS()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return true
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return p.unexpected("looking for an object key")
		}
		if _, ok := p.scanString(); !ok {
			return false
		}
		p.skipWS()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return p.unexpected("after object key")
		}
		p.i++
		p.skipWS()
		if !p.skipValue(depth) {
			return false
		}
		p.skipWS()
		if p.i >= len(p.b) {
			return p.eof()
		}
		switch p.b[p.i] {
		case '}':
			p.i++
			return true
		case ',':
			p.i++
			p.skipWS()
		default:
			return p.unexpected("after object value")
		}
	}
}

func (p *parser) skipArray(depth int) bool {
	if depth > maxDepth {
		return p.fail(msgBodyTooDeep)
	}
	p.i++ // '['
	p.skipWS()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return true
	}
	for {
		if !p.skipValue(depth) {
			return false
		}
		p.skipWS()
		if p.i >= len(p.b) {
			return p.eof()
		}
		switch p.b[p.i] {
		case ']':
			p.i++
			return true
		case ',':
			p.i++
			p.skipWS()
		default:
			return p.unexpected("after array element")
		}
	}
}

func (p *parser) literal(lit string) bool {
	for k := 0; k < len(lit); k++ {
		if p.i >= len(p.b) {
			return p.eof()
		}
		if p.b[p.i] != lit[k] {
			return p.unexpected("in literal " + lit)
		}
		p.i++
	}
	return true
}

// number checks a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
// What follows it is the caller's to check.
func (p *parser) number() bool {
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i >= len(p.b) {
		return p.eof()
	}
	switch c := p.b[p.i]; {
	case c == '0':
		p.i++
	case '1' <= c && c <= '9':
		p.digits()
	default:
		return p.unexpected("in numeric literal")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if !p.someDigits() {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if !p.someDigits() {
			return false
		}
	}
	return true
}

func (p *parser) digits() {
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
	}
}

// someDigits reads one digit or more.
func (p *parser) someDigits() bool {
	if p.i >= len(p.b) {
		return p.eof()
	}
	if c := p.b[p.i]; c < '0' || c > '9' {
		return p.unexpected("in numeric literal")
	}
	p.digits()
	return true
}

// writeUnescaped decodes the content of a JSON string that scanString has
// accepted. It follows encoding/json: a \u escape that is half of a surrogate
// pair without its other half becomes U+FFFD. The output is never longer than
// s.
func writeUnescaped(sb *strings.Builder, s []byte) {
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			j := i + 1
			for j < len(s) && s[j] != '\\' {
				j++
			}
			sb.Write(s[i:j])
			i = j
			continue
		}
		if i+1 >= len(s) { // unreachable after scanString; never panic
			return
		}
		switch c := s[i+1]; c {
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			r, ok := hex4(s, i+2)
			if !ok { // unreachable after scanString
				return
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if r2, ok := hex4(s, i+2); ok {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							sb.WriteRune(dec)
							i += 6
							continue
						}
					}
				}
				r = utf8.RuneError
			}
			sb.WriteRune(r)
			continue
		default: // '"', '\\', '/'
			sb.WriteByte(c)
		}
		i += 2
	}
}

// hex4 reads the four hex digits at s[i:i+4].
func hex4(s []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		v := hexVal(c)
		if v < 0 {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}
