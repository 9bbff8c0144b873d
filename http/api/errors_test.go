package api

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/session"
)

// Every failure kind has an answer in the table: a status code, a message,
// for a 503 a Retry-After, and an "errors" list (DESIGN: every failed
// answer has the 400's shape). A kind added without an entry fails here
// (fasthttp would send a zero status as 200).
func TestEveryFailureHasAnAnswer(t *testing.T) {
	for kind := failure(0); kind < numFailures; kind++ {
		t.Run(fmt.Sprintf("kind=%d", kind), func(t *testing.T) {
			f := failures[kind]
			if f.code < 400 {
				t.Fatalf("status %d, want 4xx or 5xx", f.code)
			}
			if f.message == "" && kind != failInvalid { // failInvalid lists the field errors
				t.Errorf("no message")
			}
			if f.code == fasthttp.StatusServiceUnavailable && f.retryAfter <= 0 {
				t.Errorf("503 with Retry-After %d, want > 0", f.retryAfter)
			}

			var ctx fasthttp.RequestCtx
			writeFailed(&ctx, kind, []session.FieldError{{Field: "body", Message: "bad"}})
			var body failedBody
			if err := json.Unmarshal(ctx.Response.Body(), &body); err != nil {
				t.Fatalf("body %q: %v", ctx.Response.Body(), err)
			}
			if got := ctx.Response.StatusCode(); got != f.code || body.Status != "failed" || body.Error == "" {
				t.Errorf("wrote %d %s, want %d with a failed status and an error", got, ctx.Response.Body(), f.code)
			}
			if ra := ctx.Response.Header.Peek("Retry-After"); f.code == fasthttp.StatusServiceUnavailable && len(ra) == 0 {
				t.Errorf("503 without Retry-After")
			}
			if kind == failInvalid {
				return // always written with its field errors
			}
			// Without field errors, the one entry names what to change.
			ctx = fasthttp.RequestCtx{}
			writeFailed(&ctx, kind, nil)
			body = failedBody{}
			if err := json.Unmarshal(ctx.Response.Body(), &body); err != nil {
				t.Fatalf("body %q: %v", ctx.Response.Body(), err)
			}
			if len(body.Errors) != 1 || body.Errors[0].Field == "" || body.Errors[0].Message != body.Error {
				t.Errorf("errors %+v, want one entry naming a field, with the error's message %q", body.Errors, body.Error)
			}
		})
	}
}

// A redeliver while the engine is still resuming answers 503 with
// Retry-After, not a 200 with an empty error.
func TestRedeliverBeforeReady(t *testing.T) {
	a := &admin{svc: &Server{cfg: Config{Engine: func() *actors.Engine { return nil }}}} // no engine yet: still resuming
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI("/sessions/0195f3a2-0000-7000-8000-000000000000/redeliver")
	a.handle(&ctx)
	if got, ra := ctx.Response.StatusCode(), ctx.Response.Header.Peek("Retry-After"); got != fasthttp.StatusServiceUnavailable || len(ra) == 0 {
		t.Errorf("%d (Retry-After %q) %s, want 503 with Retry-After", got, ra, ctx.Response.Body())
	}
	var body failedBody
	if err := json.Unmarshal(ctx.Response.Body(), &body); err != nil || body.Error != failures[failNotReady].message {
		t.Errorf("body %s (%v), want the not-ready message", ctx.Response.Body(), err)
	}
}
