package webhook

import (
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// Send returns the start of the receiver's answer, on success and on
// failure alike: at most 256 bytes, as sent, the driver token masked.
func TestSendReturnsTheStartOfTheAnswer(t *testing.T) {
	long := strings.Repeat("0123456789", 40)
	for _, tc := range []struct {
		name string
		code int
		body string
		want string
	}{
		{"empty", 200, "", ""},
		{"delivered", 204, "", ""},
		{"ok", 200, `{"ok":true}`, `{"ok":true}`},
		{"failed", 503, "busy\r\n\x00\x1b[31m", "busy\r\n\x00\x1b[31m"},
		{"long", 500, long, long[:session.MaxResponseLog]},
		{"echoed token", 400, `{"driver_token":"` + testToken + `"}`, `{"driver_token":"` + session.MaskToken(testToken) + `"}`},
		{"token cut at 256", 400, strings.Repeat("x", 250) + testToken, (strings.Repeat("x", 250) + session.MaskToken(testToken))[:256]},
		{"rune cut at 256", 500, strings.Repeat("x", 255) + "é", strings.Repeat("x", 255)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := startReceiver(t, func(ctx *fasthttp.RequestCtx) {
				ctx.SetStatusCode(tc.code)
				ctx.SetBodyString(tc.body)
			})
			s := newSender(t, Config{AllowPrivate: true})
			res := s.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed)
			if res.StatusCode != tc.code {
				t.Fatalf("status %d, want %d (%v)", res.StatusCode, tc.code, res.Err)
			}
			if res.Response != tc.want {
				t.Errorf("response %q, want %q", res.Response, tc.want)
			}
			if len(res.Response) > session.MaxResponseLog {
				t.Errorf("response of %d bytes, more than %d", len(res.Response), session.MaxResponseLog)
			}
		})
	}
}

// A body far over the 256 bytes kept costs one allocation of at most those.
func TestResponseStartAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations differ under race")
	}
	body := bytes.Repeat([]byte("y"), 64<<10)
	var got string
	if n := testing.AllocsPerRun(100, func() { got = responseStart(body, testToken) }); n > 1 {
		t.Errorf("%v allocations, want 1", n)
	}
	if len(got) != session.MaxResponseLog {
		t.Errorf("%d bytes kept", len(got))
	}
	if n := testing.AllocsPerRun(100, func() { got = responseStart(nil, testToken) }); n != 0 || got != "" {
		t.Errorf("empty body: %v allocations, %q", n, got)
	}
}
