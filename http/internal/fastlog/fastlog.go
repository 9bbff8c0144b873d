// Package fastlog routes fasthttp's own log messages to slog without the
// request bytes they may quote.
//
// fasthttp logs a connection it could not read as "error when serving
// connection %q<->%q: %v", and the error quotes the offending part of the
// request even with SecureErrorLogMessage set: the request line's version
// ("unsupported http version \"HTTP/1.1 <token>\""), a header line without a
// colon, a header value. Without SecureErrorLogMessage it also appends the
// whole buffer ("contents: ..."), driver tokens included. Logger keeps the
// addresses and numbers of a message, cuts every error argument at its
// first quote, "contents" or "body=", so that only fasthttp's own words
// remain, and drops string and Stringer arguments (RequestCtx.Logger passes
// the request's URI as one).
package fastlog

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
)

// Logger is a fasthttp.Logger on slog, at Warn level.
type Logger struct {
	Log *slog.Logger
	// Attrs are added to every record (e.g. "component", "fasthttp").
	Attrs []any
}

// Printf formats a fasthttp message with its text arguments redacted.
func (l Logger) Printf(format string, args ...any) {
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case net.Addr, net.IP, int, int32, int64, uint, uint32, uint64, float64, bool:
			safe[i] = v
		case error:
			safe[i] = redactedError(Redact(v.Error()))
		default: // strings and Stringers: a request's URI and the like
			safe[i] = "[redacted]"
		}
	}
	l.Log.Warn(fmt.Sprintf(format, safe...), l.Attrs...)
}

// redactedError prints as its (already redacted) text under %v and %s.
type redactedError string

func (e redactedError) Error() string { return string(e) }

// Redact cuts s before the first quoted or dumped part: a quote mark,
// "contents", "body=". What is cut is replaced by "[redacted]".
func Redact(s string) string {
	cut := len(s)
	for _, m := range []string{`"`, "'", "`", "contents", "body="} {
		if i := strings.Index(s, m); i >= 0 && i < cut {
			cut = i
		}
	}
	if cut == len(s) {
		return s
	}
	return strings.TrimRight(s[:cut], " :,=") + " [redacted]"
}
