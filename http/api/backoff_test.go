package api_test

import (
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// --callback-backoff is the first retry's delay: with a schedule whose
// first retry is an hour away, a backoff of 50ms brings it back within the
// test. The receiver fails the first attempt and takes the second.
func TestCallbackBackoffIsFirstRetry(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	recv.answer = func(n int) int {
		if n == 1 {
			return 500
		}
		return 204
	}
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackSchedule: schedule.Delays{0, time.Hour}, CallbackBackoff: 50 * time.Millisecond})
	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	waitStates(t, svc, []string{id}, session.StateDelivered)
	got := recv.byID(id)
	if len(got) != 2 {
		t.Fatalf("%d callbacks, want 2 (a failed one, then the retry)", len(got))
	}
	if gap := got[1].At.Sub(got[0].At); gap < 30*time.Millisecond || gap > 10*time.Second {
		t.Errorf("retry %v after the first attempt, want about the 50ms backoff (jittered by 20%%), not the schedule's hour", gap)
	}
}
