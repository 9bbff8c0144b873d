package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/chargeauth/chargeauth/http/api"
	"github.com/chargeauth/chargeauth/session"
)

// When the disk fails a write, the front answers 503 with Retry-After,
// keeps nothing of the refused request, and recovers by itself once the
// fault clears; a request whose decision could not be stored meanwhile is
// decided and called back after the recovery.
func TestWriteFault503AndRecovery(t *testing.T) {
	fault := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			return errorfs.ErrInjected
		}
		return nil
	})}
	authz := startFakeAuthz(t, 300*time.Millisecond)
	recv := startReceiver(t)
	svc := startService(t, api.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		FS: errorfs.Wrap(vfs.NewMem(), fault), DecisionTimeout: 5 * time.Second})
	url := "http://" + svc.Addr() + "/charge_point/session/"

	// Accepted before the fault; its decision (after 300ms) meets the fault.
	early := mustAccept(t, svc, tokSlow, recv.URL+"/cb")
	fault.On()
	for i := range 3 {
		r := do(t, "POST", url, "application/json", sessionBody(station, tokAllowed, recv.URL+"/cb"))
		if r.code != 503 || r.header["retry-after"] == "" {
			t.Fatalf("POST %d during the fault: %d (Retry-After %q) %s, want 503", i, r.code, r.header["retry-after"], r.body)
		}
		if m := r.json(t); m["status"] != "failed" {
			t.Errorf("body %s", r.body)
		}
	}
	time.Sleep(600 * time.Millisecond) // the early request's decision fails meanwhile
	fault.Off()

	var late string
	eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		r := do(t, "POST", url, "application/json", sessionBody(station, tokNotAllowed, recv.URL+"/cb"))
		if r.code != 202 {
			return fmt.Errorf("still %d", r.code)
		}
		late, _ = r.json(t)["request_id"].(string)
		return nil
	})
	for id, want := range map[string]string{early: "allowed", late: "not_allowed"} {
		eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			cbs := recv.byID(id)
			if len(cbs) == 0 {
				return fmt.Errorf("no callback for %s", id)
			}
			if wantBody := fmt.Sprintf(`"status":%q`, want); !strings.Contains(cbs[0].Body, wantBody) {
				t.Errorf("%s: callback %s, want %s", id, cbs[0].Body, want)
			}
			return nil
		})
	}
	// Only the two acknowledged requests exist: the refused ones left nothing.
	total := int64(0)
	for _, st := range []session.State{session.StatePending, session.StateDecided, session.StateDelivered, session.StateFailed} {
		total += svc.Store().Count(st)
	}
	if total != 2 {
		t.Errorf("%d records stored, want 2 (the 503s must leave nothing)", total)
	}
}

// Under the free-space floor, accepts get 503 with Retry-After and nothing
// is stored; when space returns, accepts resume.
func TestMinFreeDisk(t *testing.T) {
	fs := vfs.NewMem()
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 100 << 20, TotalBytes: 1 << 30, UsedBytes: (1 << 30) - (100 << 20)})
	authz := startFakeAuthz(t, 0)
	svc := startService(t, api.Config{AuthzURL: authz.URL, FS: fs, MinFreeDisk: 256 << 20})
	url := "http://" + svc.Addr() + "/charge_point/session/"
	r := do(t, "POST", url, "application/json", sessionBody(station, tokAllowed, "https://example.com/cb"))
	if r.code != 503 || r.header["retry-after"] == "" {
		t.Fatalf("under the floor: %d %s, want 503 with Retry-After", r.code, r.body)
	}
	if n := svc.Store().Count(session.StatePending); n != 0 {
		t.Errorf("%d stored under the floor", n)
	}
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 10 << 30, TotalBytes: 20 << 30})
	eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		r := do(t, "POST", url, "application/json", sessionBody(station, tokAllowed, "https://example.com/cb"))
		if r.code != 202 {
			return fmt.Errorf("still %d", r.code)
		}
		return nil
	})
}
