package api_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/node"
)

// The authorization service never has more than --authz-concurrency calls
// at once, counted where it matters: in its own handler, from entry to
// exit. Every call here takes longer than the request's deadline, so a
// worker that gave up on its call at the deadline and took the next one
// would have the service working on more calls than the bound. And no
// call arrives after its request's deadline.
func TestAuthzServiceSeesAtMostConcurrency(t *testing.T) {
	const (
		concurrency = 2
		requests    = 12
		timeout     = 300 * time.Millisecond
		serviceTime = 700 * time.Millisecond // longer than the deadline
	)
	var inFlight, peak, calls atomic.Int64
	var mu sync.Mutex
	arrived := map[string]time.Time{} // token -> when its first call arrived
	authzURL := serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		calls.Add(1)
		var req struct {
			DriverToken string `json:"driver_token"`
		}
		_ = json.Unmarshal(ctx.PostBody(), &req)
		mu.Lock()
		if _, ok := arrived[req.DriverToken]; !ok {
			arrived[req.DriverToken] = time.Now()
		}
		mu.Unlock()
		time.Sleep(serviceTime) // on purpose: each call takes the service this long
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"allowed"}`)
	})
	rcv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: authzURL, AuthzConcurrency: concurrency,
		DecisionTimeout: timeout, AllowPrivateCallbacks: true})

	decideBy := map[string]time.Time{} // token -> its request's deadline
	ids := make([]string, 0, requests)
	for i := range requests {
		token := fmt.Sprintf("boundDriverToken%08d", i)
		r := do(t, "POST", "http://"+svc.Addr()+"/charge_point/session/", "application/json",
			sessionBody("123e4567-e89b-12d3-a456-426614174000", token, rcv.URL+"/cb"))
		if r.code != fasthttp.StatusAccepted {
			t.Fatalf("POST %d: %d %s", i, r.code, r.body)
		}
		body := r.json(t)
		by, err := time.Parse(time.RFC3339Nano, fmt.Sprint(body["decide_by"]))
		if err != nil {
			t.Fatalf("decide_by %v: %v", body["decide_by"], err)
		}
		decideBy[token] = by
		ids = append(ids, fmt.Sprint(body["request_id"]))
		time.Sleep(timeout / 3) // on purpose: requests arrive spread over the deadlines
	}
	eventually(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, id := range ids {
			if len(rcv.byID(id)) == 0 {
				return fmt.Errorf("no callback yet for %s", id)
			}
		}
		if n := inFlight.Load(); n != 0 {
			return fmt.Errorf("%d calls still at the service", n)
		}
		return nil
	})

	if calls.Load() < concurrency {
		t.Fatalf("%d calls reached the service: the bound was not exercised", calls.Load())
	}
	if p := peak.Load(); p > concurrency {
		t.Errorf("the service had %d calls at once; --authz-concurrency is %d", p, concurrency)
	}
	mu.Lock()
	defer mu.Unlock()
	for token, at := range arrived {
		// decide_by is given to the millisecond; the call also travels.
		if at.After(decideBy[token].Add(50 * time.Millisecond)) {
			t.Errorf("%s: called at %s, after its deadline %s", token, at.Format(time.RFC3339Nano), decideBy[token].Format(time.RFC3339Nano))
		}
	}
}
