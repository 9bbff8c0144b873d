package actors

import (
	"crypto/sha256"
	"time"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// IdempotencyTTL is how long an Idempotency-Key names its first request.
const IdempotencyTTL = 24 * time.Hour

// AcceptIdempotent is Accept with an Idempotency-Key: a key taken within
// IdempotencyTTL by an equal request answers with that request's record
// and replayed true, and starts nothing; by a different request, with that
// record and an error wrapping persistence.ErrIdempotencyMismatch.
// Otherwise the request is accepted as by Accept, its key in the same
// durable write.
func (e *Engine) AcceptIdempotent(req session.Request, key string) (rec session.Record, replayed bool, err error) {
	idem := persistence.Idempotency{Key: key, Hash: RequestHash(req), TTL: IdempotencyTTL}
	rec, err = e.accept(req, func(r *session.Record) (bool, error) {
		prior, rep, err := e.cfg.Store.AcceptIdempotent(r, idem)
		if rep || err != nil && prior.ID != "" {
			*r, replayed = prior, rep
			return false, err
		}
		return true, err
	})
	return rec, replayed, err
}

// RequestHash identifies a request for its Idempotency-Key: the SHA-256
// of its fields as sent (not of the body bytes, so that a retry whose JSON
// is laid out differently is the same request).
func RequestHash(req session.Request) [32]byte {
	h := sha256.New()
	for _, f := range []string{req.StationID, req.DriverToken, req.CallbackURL} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
