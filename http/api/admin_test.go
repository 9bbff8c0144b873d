package api_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

func TestAdminEndpoints(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	recv.answer = func(int) int { return 500 }
	recv.body = "{\"error\":\"down\"}\n\x1b[1m" // with control characters, kept as sent
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackMaxAttempts: 2, CallbackSchedule: schedule.Doubling(time.Millisecond, 2*time.Millisecond)})
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
	// The full record: its transitions and its callback attempts.
	var full struct {
		Transitions []struct {
			State string `json:"state"`
		} `json:"transitions"`
		Attempts []struct {
			StatusCode int     `json:"status_code"`
			Error      string  `json:"error"`
			DurationMS float64 `json:"duration_ms"`
			Response   string  `json:"response"`
		} `json:"attempts"`
		CallbackAttempts int `json:"callback_attempts"`
	}
	if err := json.Unmarshal(do(t, "GET", admin+"/sessions/"+id, "", nil).body, &full); err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, tr := range full.Transitions {
		states = append(states, tr.State)
	}
	if strings.Join(states, ",") != "pending,decided,failed" {
		t.Errorf("transitions %v", states)
	}
	if len(full.Attempts) != 2 || full.Attempts[0].StatusCode != 500 || full.Attempts[1].Error == "" || full.Attempts[0].DurationMS <= 0 {
		t.Errorf("attempts %+v, want two 500s", full.Attempts)
	}
	for _, a := range full.Attempts {
		if a.Response != recv.body {
			t.Errorf("attempt response %q, want the receiver's answer %q", a.Response, recv.body)
		}
	}

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
	// The redelivery appended to the story: the earlier failure is kept,
	// and the attempts went on counting.
	full.Transitions, full.Attempts = nil, nil
	if err := json.Unmarshal(do(t, "GET", admin+"/sessions/"+id, "", nil).body, &full); err != nil {
		t.Fatal(err)
	}
	states = states[:0]
	for _, tr := range full.Transitions {
		states = append(states, tr.State)
	}
	if strings.Join(states, ",") != "pending,decided,failed,redelivered,delivered" {
		t.Errorf("transitions after the redelivery %v", states)
	}
	if full.CallbackAttempts != 3 || len(full.Attempts) != 3 || full.Attempts[2].StatusCode != 204 || full.Attempts[0].StatusCode != 500 {
		t.Errorf("after the redelivery: %d attempts, log %+v; want 3: two 500s, then a 204", full.CallbackAttempts, full.Attempts)
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
		`chargeauth_pipeline_paced 0`,
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

func TestAdminListFiltersAndPages(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL})
	admin := "http://" + svc.AdminAddr()
	const other = "aaaaaaaa-e89b-12d3-a456-426614174000"
	var ids []string
	for i := range 7 {
		st := station
		if i%2 == 1 {
			st = other
		}
		r := do(t, "POST", "http://"+svc.Addr()+"/charge_point/session/", "application/json", sessionBody(st, tokAllowed, "https://example.com/cb"))
		if r.code != 202 {
			t.Fatalf("%d %s", r.code, r.body)
		}
		ids = append(ids, r.json(t)["request_id"].(string))
	}
	type page struct {
		Sessions []struct {
			ID        string `json:"request_id"`
			StationID string `json:"station_id"`
			Token     string `json:"driver_token"`
		} `json:"sessions"`
		Next string `json:"next_cursor"`
	}
	get := func(query string) page {
		t.Helper()
		r := do(t, "GET", admin+"/sessions?"+query, "", nil)
		if r.code != 200 {
			t.Fatalf("%s: %d %s", query, r.code, r.body)
		}
		var p page
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Newest first, three at a time, following next_cursor.
	var seen []string
	query := "limit=3"
	for range 5 {
		p := get(query)
		for _, s := range p.Sessions {
			seen = append(seen, s.ID)
			if s.Token == tokAllowed {
				t.Fatal("list shows a full driver token")
			}
		}
		if p.Next == "" {
			break
		}
		query = "limit=3&cursor=" + p.Next
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(seen, want) {
		t.Errorf("pages gave %v, want newest first %v", seen, want)
	}
	if p := get("station_id=" + other); len(p.Sessions) != 3 {
		t.Errorf("station filter: %d sessions, want 3", len(p.Sessions))
	}
	if p := get("since=2099-01-01T00:00:00Z"); len(p.Sessions) != 0 {
		t.Errorf("since in the future: %d sessions", len(p.Sessions))
	}
	if p := get("since=1h"); len(p.Sessions) != 7 {
		t.Errorf("since=1h: %d sessions, want all 7", len(p.Sessions))
	}
	for _, bad := range []string{"state=bogus", "station_id=nope", "since=yesterday", "limit=0", "cursor=zz"} {
		if r := do(t, "GET", admin+"/sessions?"+bad, "", nil); r.code != 400 {
			t.Errorf("%s: %d, want 400", bad, r.code)
		}
	}
}

// Closing makes /readyz answer 503 first, while in-flight work still has
// its grace: a load balancer stops sending before the service stops.
func TestReadyzDownWhileClosing(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	release := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	entered := make(chan struct{}, 1)
	hook := serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release // the callback is in flight until released
		ctx.SetStatusCode(204)
	})
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true})
	t.Cleanup(releaseAll) // registered last, so it runs before the servers stop
	admin := "http://" + svc.AdminAddr()
	mustAccept(t, svc, tokAllowed, hook+"/cb")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback never reached the receiver")
	}

	closed := make(chan error, 1)
	go func() { closed <- svc.Close() }()
	eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if r := do(t, "GET", admin+"/readyz", "", nil); r.code != 503 {
			return fmt.Errorf("readyz %d while closing", r.code)
		}
		return nil
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the test saw /readyz go down", err)
	default:
	}
	releaseAll()
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
