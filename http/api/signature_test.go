package api_test

import (
	"net/http"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/chargeauth/chargeauth/node"
)

// With --callback-secret, a captured callback verifies with the reference
// Go library of the Standard Webhooks specification, for each of two
// secrets (rotation).
func TestCallbackSignatureVerifiesWithReferenceLibrary(t *testing.T) {
	const (
		secret1 = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		secret2 = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tMTIzNDU2"
	)
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackSecret: secret1 + " " + secret2})
	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	var cbs []callback
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if cbs = recv.byID(id); len(cbs) == 0 {
			return errNoCallback
		}
		return nil
	})
	cb := cbs[0]
	h := http.Header{}
	h.Set("webhook-id", cb.ID)
	h.Set("webhook-timestamp", cb.Timestamp)
	h.Set("webhook-signature", cb.Signature)
	for _, secret := range []string{secret1, secret2} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify([]byte(cb.Body), h); err != nil {
			t.Errorf("verify with %s: %v (signature header %q)", secret[:10], err, cb.Signature)
		}
	}
	// A tampered body does not verify.
	wh, _ := standardwebhooks.NewWebhook(secret1)
	if err := wh.Verify([]byte(cb.Body+" "), h); err == nil {
		t.Error("a tampered body verified")
	}
}
