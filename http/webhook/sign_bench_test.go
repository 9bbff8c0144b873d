package webhook

import (
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/chargeauth/chargeauth/session"
)

// BenchmarkSign compares appendSignature with the Standard Webhooks Go
// library's Webhook.Sign on a real callback body, two secrets (rotation).
func BenchmarkSign(b *testing.B) {
	secrets := []string{
		"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"whsec_dGhpcyBpcyBhIHNlY29uZCAzMi1ieXRlIHNlY3JldCE=",
	}
	body := Body(session.Request{StationID: testStation, DriverToken: testToken}, session.StatusAllowed)
	ts := time.Unix(1700000000, 0)
	b.Run("impl=ours", func(b *testing.B) {
		var keys [][]byte
		for _, s := range secrets {
			k, err := ParseSecret(s)
			if err != nil {
				b.Fatal(err)
			}
			keys = append(keys, k)
		}
		b.ReportAllocs()
		sig := make([]byte, 0, 128)
		for b.Loop() {
			sig = sig[:0]
			for i, k := range keys {
				if i > 0 {
					sig = append(sig, ' ')
				}
				sig = appendSignature(sig, k, testID, ts.Unix(), body)
			}
		}
	})
	b.Run("impl=standardwebhooks", func(b *testing.B) {
		var whs []*standardwebhooks.Webhook
		for _, s := range secrets {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				b.Fatal(err)
			}
			whs = append(whs, wh)
		}
		b.ReportAllocs()
		sig := make([]byte, 0, 128)
		for b.Loop() {
			sig = sig[:0]
			for i, wh := range whs {
				if i > 0 {
					sig = append(sig, ' ')
				}
				s, err := wh.Sign(testID, ts, body)
				if err != nil {
					b.Fatal(err)
				}
				sig = append(sig, s...)
			}
		}
	})
}

// Our signature is the library's, for each secret of a rotation.
func TestSignAgreesWithStandardWebhooks(t *testing.T) {
	body := Body(session.Request{StationID: testStation, DriverToken: testToken}, session.StatusNotAllowed)
	ts := time.Unix(1700000123, 0)
	for _, s := range []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_dGhpcyBpcyBhIHNlY29uZCAzMi1ieXRlIHNlY3JldCE="} {
		key, err := ParseSecret(s)
		if err != nil {
			t.Fatal(err)
		}
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		want, err := wh.Sign(testID, ts, body)
		if err != nil {
			t.Fatal(err)
		}
		if got := Sign(key, testID, ts.Unix(), body); got != want {
			t.Errorf("Sign = %s, library = %s", got, want)
		}
	}
}
