package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/http/api"
	"github.com/chargeauth/chargeauth/session"
)

func TestAdminEndpoints(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	recv.answer = func(int) int { return 500 }
	svc := startService(t, api.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackMaxAttempts: 2, CallbackBackoff: time.Millisecond, CallbackMaxBackoff: 2 * time.Millisecond})
	admin := "http://" + svc.AdminAddr()

	if r := do(t, "GET", admin+"/healthz", "", nil); r.code != 200 {
		t.Errorf("healthz %d", r.code)
	}
	if r := do(t, "GET", admin+"/readyz", "", nil); r.code != 200 {
		t.Errorf("readyz %d once started", r.code)
	}

	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		r := do(t, "GET", admin+"/sessions/"+id, "", nil)
		if r.code != 200 {
			return fmt.Errorf("%d %s", r.code, r.body)
		}
		if strings.Contains(string(r.body), tokAllowed) {
			t.Fatalf("admin shows the full driver token: %s", r.body)
		}
		if st := r.json(t)["state"]; st != "failed" {
			return fmt.Errorf("state %v", st)
		}
		return nil
	})
	r := do(t, "GET", admin+"/sessions?state=failed&limit=5", "", nil)
	if r.code != 200 || !strings.Contains(string(r.body), id) || r.json(t)["count"] != float64(1) {
		t.Errorf("list: %d %s", r.code, r.body)
	}
	if r := do(t, "GET", admin+"/sessions?state=bogus", "", nil); r.code != 400 {
		t.Errorf("bad state: %d", r.code)
	}

	// Redeliver: the receiver now accepts.
	recv.mu.Lock()
	recv.answer = nil
	recv.mu.Unlock()
	if r := do(t, "POST", admin+"/sessions/"+id+"/redeliver", "", nil); r.code != 202 {
		t.Fatalf("redeliver: %d %s", r.code, r.body)
	}
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		rec, err := svc.Store().Get(id)
		if err != nil || rec.State != session.StateDelivered {
			return fmt.Errorf("%v %v", rec.State, err)
		}
		return nil
	})
	if r := do(t, "POST", admin+"/sessions/"+id+"/redeliver", "", nil); r.code != 409 {
		t.Errorf("redeliver of a delivered request: %d, want 409", r.code)
	}

	m := do(t, "GET", admin+"/metrics", "", nil)
	for _, want := range []string{
		`chargeauth_requests_total{outcome="accepted"} 1`,
		`chargeauth_ack_seconds_count 1`,
		`chargeauth_decisions_total{decided_by="authz",status="allowed"} 1`,
		`chargeauth_decision_seconds_count 1`,
		`chargeauth_authz_calls_total{result="answered"} 1`,
		`chargeauth_authz_call_seconds_count 1`,
		`chargeauth_callback_attempts_total{result="retry"} 1`,
		`chargeauth_callback_attempts_total{result="failed"} 1`,
		`chargeauth_callback_attempts_total{result="delivered"} 1`,
		`chargeauth_callback_attempt_seconds_count 3`,
		`chargeauth_records{state="delivered"} 1`,
		`chargeauth_live_requests 0`,
		`chargeauth_backlog 0`,
		`chargeauth_pebble_wal_fsync_seconds_count`,
		`chargeauth_pebble_disk_usage_bytes`,
		`chargeauth_pebble_compaction_debt_bytes`,
	} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(string(m.body), "chargeauth_pebble_wal_fsync_seconds_count 0\n") {
		t.Error("no WAL fsync counted after synced writes")
	}
}
