package api

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// idempotencyHeader is the request header of draft-ietf-httpapi-idempotency-key-header.
const idempotencyHeader = "Idempotency-Key"

// maxIdempotencyKey is the longest key accepted, in bytes.
const maxIdempotencyKey = 255

// errAnswered: the answer is written already; the caller stops.
var errAnswered = errors.New("api: answered")

// acceptWithKey accepts req, through its Idempotency-Key if it has one. A
// key taken within 24 h by the same request answers with that request
// (the header Idempotent-Replayed: true marks the replay, as Stripe's API
// does); a key taken by a different request is a 422; a key that is not 1
// to 255 printable ASCII characters is a 400. It returns errAnswered when it
// has written the answer itself.
func (f *front) acceptWithKey(ctx *fasthttp.RequestCtx, req session.Request) (session.Record, error) {
	k := ctx.Request.Header.Peek(idempotencyHeader)
	if len(k) == 0 {
		return f.engine.Accept(req)
	}
	if !validIdempotencyKey(k) {
		f.metrics.outcome("invalid")
		writeFailed(ctx, failInvalid, []session.FieldError{{Field: idempotencyHeader,
			Message: "Idempotency-Key must be 1 to 255 printable ASCII characters"}})
		return session.Record{}, errAnswered
	}
	rec, replayed, err := f.engine.AcceptIdempotent(req, string(k))
	switch {
	case errors.Is(err, persistence.ErrIdempotencyMismatch):
		f.metrics.outcome("invalid")
		writeFailed(ctx, failIdempotencyMismatch, nil)
		return session.Record{}, errAnswered
	case err != nil:
		return session.Record{}, err
	}
	if replayed {
		ctx.Response.Header.Set("Idempotent-Replayed", "true")
	}
	return rec, nil
}

func validIdempotencyKey(k []byte) bool {
	if len(k) > maxIdempotencyKey {
		return false
	}
	for _, c := range k {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
