package fastlog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
)

const token = "secretDriverToken123456"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"error when reading request headers: unsupported http version \"HTTP/1.1 " + token + "\": buffer size=321",
			"error when reading request headers: unsupported http version [redacted]"},
		{"malformed mime header: missing colon: \"X-Token " + token + "\"", "malformed mime header: missing colon [redacted]"},
		{"error when reading request headers: bad thing: buffer size=9, contents: \"POST / HTTP/1.1\\r\\nX: " + token,
			"error when reading request headers: bad thing: buffer size=9 [redacted]"},
		{"non-zero body for non-post request: body=" + token, "non-zero body for non-post request [redacted]"},
		{"cannot find crlf at the end of chunk", "cannot find crlf at the end of chunk"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// The message fasthttp logs for a connection it could not read keeps its
// addresses and loses the quoted request bytes.
func TestPrintfKeepsAddressesDropsTokens(t *testing.T) {
	var buf bytes.Buffer
	l := Logger{Log: slog.New(slog.NewJSONHandler(&buf, nil)), Attrs: []any{"component", "fasthttp"}}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	err := fmt.Errorf("error when reading request headers: %w", errors.New(`unsupported http version "HTTP/1.1 `+token+`"`))
	l.Printf("error when serving connection %q<->%q: %v", local, remote, err)
	l.Printf("%.3f %s - %s", 0.5, stringer("#0 - 127.0.0.1:1<->127.0.0.1:2 - GET http://x/?t="+token), "handler said \""+token+"\"")
	out := buf.String()
	if strings.Contains(out, token) {
		t.Errorf("log has the token: %s", out)
	}
	for _, want := range []string{`127.0.0.1:8080`, `127.0.0.1:40000`, "unsupported http version [redacted]", `"component":"fasthttp"`, `"level":"WARN"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %s lacks %s", out, want)
		}
	}
}

type stringer string

func (s stringer) String() string { return string(s) }
