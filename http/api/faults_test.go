package api_test

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/chargeauth/chargeauth/node"
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
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
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
	// The early request's decision (after the slow answer) fails meanwhile.
	failures := func() (n int64) {
		for _, c := range svc.Store().WriteFailures() {
			n += c
		}
		return n
	}
	refused := failures()
	eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if !authz.hasAnswered(tokSlow) || failures() == refused {
			return fmt.Errorf("the early request's decision has not met the fault yet")
		}
		return nil
	})
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
	svc := startService(t, node.Config{AuthzURL: authz.URL, FS: fs, MinFreeDisk: 256 << 20})
	url := "http://" + svc.Addr() + "/charge_point/session/"
	r := do(t, "POST", url, "application/json", sessionBody(station, tokAllowed, "https://example.com/cb"))
	if r.code != 503 || r.header["retry-after"] == "" {
		t.Fatalf("under the floor: %d %s, want 503 with Retry-After", r.code, r.body)
	}
	if n := svc.Store().Count(session.StatePending); n != 0 {
		t.Errorf("%d stored under the floor", n)
	}
	admin := "http://" + svc.AdminAddr() + "/readyz"
	if r := do(t, "GET", admin, "", nil); r.code != 503 || !strings.Contains(string(r.body), "floor") {
		t.Errorf("/readyz under the floor: %d %s, want 503 with the reason", r.code, r.body)
	}
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 10 << 30, TotalBytes: 20 << 30})
	eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		r := do(t, "POST", url, "application/json", sessionBody(station, tokAllowed, "https://example.com/cb"))
		if r.code != 202 {
			return fmt.Errorf("still %d", r.code)
		}
		return nil
	})
	if r := do(t, "GET", admin, "", nil); r.code != 200 {
		t.Errorf("/readyz above the floor: %d %s", r.code, r.body)
	}
}

// While the disk is full the service degrades without hanging or lying:
// POST 503 with Retry-After within 100 ms, GET of a stored id and the
// admin reads keep answering, /readyz says 503 with the cause, /metrics
// counts the failures by cause; when the disk takes writes again, POSTs
// are accepted within 5 s.
func TestDiskFullDegrades(t *testing.T) {
	var on atomic.Bool
	fault := errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo, errorfs.OpCreate:
			if on.Load() {
				return syscall.ENOSPC
			}
		}
		return nil
	})
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL, FS: errorfs.Wrap(vfs.NewMem(), fault)})
	url := "http://" + svc.Addr() + "/charge_point/session/"
	admin := "http://" + svc.AdminAddr()
	id := mustAccept(t, svc, tokAllowed, "https://example.com/cb")

	on.Store(true)
	var tooks []time.Duration
	for i := range 20 {
		start := time.Now()
		r := do(t, "POST", url, "application/json", sessionBody(station, tokAllowed, "https://example.com/cb"))
		took := time.Since(start)
		if r.code != 503 || r.header["retry-after"] == "" || took > time.Second {
			t.Fatalf("POST %d on a full disk: %d (Retry-After %q) after %s: %s", i, r.code, r.header["retry-after"], took, r.body)
		}
		tooks = append(tooks, took)
	}
	// The promise is 100 ms; it is held on the median, since one answer
	// under -race on a loaded 2-core machine may take longer with no lock
	// held. A hang (the bug) fails above at 1 s.
	slices.Sort(tooks)
	if med := tooks[len(tooks)/2]; med > 100*time.Millisecond {
		t.Errorf("POST on a full disk: median answer %s, want within 100ms", med)
	}
	eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, u := range []string{url + id, admin + "/sessions/" + id} {
			start := time.Now()
			r := do(t, "GET", u, "", nil)
			if took := time.Since(start); r.code != 200 || took > 100*time.Millisecond {
				return fmt.Errorf("GET %s: %d after %s", u, r.code, took)
			}
		}
		return nil
	})
	r := do(t, "GET", admin+"/readyz", "", nil)
	if r.code != 503 || !strings.Contains(string(r.body), "disk full") {
		t.Errorf("/readyz on a full disk: %d %s, want 503 with the reason", r.code, r.body)
	}
	if r := do(t, "GET", admin+"/healthz", "", nil); r.code != 200 {
		t.Errorf("/healthz: %d", r.code)
	}
	m := do(t, "GET", admin+"/metrics", "", nil)
	if !strings.Contains(string(m.body), `chargeauth_store_write_failures_total{cause="disk_full"}`) ||
		strings.Contains(string(m.body), `chargeauth_store_write_failures_total{cause="disk_full"} 0`) {
		t.Errorf("/metrics counts no disk_full failure")
	}

	on.Store(false)
	start := time.Now()
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := do(t, "POST", url, "application/json", sessionBody(station, tokAllowed, "https://example.com/cb")); r.code != 202 {
			return fmt.Errorf("still %d", r.code)
		}
		return nil
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("writes resumed %s after the disk did, want within 5s", took)
	}
	if r := do(t, "GET", admin+"/readyz", "", nil); r.code != 200 {
		t.Errorf("/readyz after recovery: %d %s", r.code, r.body)
	}
}
