package actors

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// retryDelay is the jittered delay before retry number n (1 = first retry):
// base doubling per retry, capped at max, ±50% jitter (cenkalti/backoff's
// ExponentialBackOff), and never above max. The delay depends only on n,
// so a schedule stored as an attempt count resumes where it was.
func retryDelay(base, max time.Duration, n int) time.Duration {
	if base <= 0 {
		return 0
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     base,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         max,
	}
	b.Reset()
	d := b.NextBackOff()
	for i := 1; i < n; i++ {
		d = b.NextBackOff()
	}
	return min(d, max)
}

// callbackDelay is the delay before callback retry n (1 = first retry):
// exponential backoff with full jitter, uniform in [0, min(max, base·2^(n-1))]
// (as the Standard Webhooks platforms and AWS's "full jitter" advise, so
// that many requests failing together spread their retries).
func callbackDelay(base, max time.Duration, n int) time.Duration {
	if base <= 0 {
		return 0
	}
	ceiling := base
	for i := 1; i < n && ceiling < max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, max)
	return rand.N(ceiling + 1)
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
