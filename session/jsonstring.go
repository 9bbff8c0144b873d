package session

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s to dst as a JSON string, byte for byte as
// encoding/json writes it with SetEscapeHTML(false): ", \ and control
// characters are escaped (\b \f \n \r \t short), invalid UTF-8 becomes
// \ufffd, and U+2028 / U+2029 are escaped (encoding/json always does, for
// JavaScript). It is the one JSON string encoder of the tree: the callback
// body and the authorization request use it.
//
// Not HTML-escaped: these bodies go to programs, never into a page, and
// "<" written as \u003c would only make a receiver's log harder to read
// (validated fields never hold <, > or & anyway).
//
// Ours rather than a library's: encoding/json (the reference it is tested
// against, FuzzAppendJSONString) costs an allocation and a reflect walk per
// string: BenchmarkAppendJSONString, a driver token, -count=5 in one run on
// 2 shared cores: ours 49-73 ns/op and 0 allocs, json.Marshal 183-534 ns/op
// and 1 alloc (32 B). jsontext.AppendQuote
// needs GOEXPERIMENT=jsonv2 in Go 1.26 and escapes U+2028 only with its
// EscapeForJS option.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
