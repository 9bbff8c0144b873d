package api_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/node"
)

// An external --authz-url service gets batches only with --authz-batch;
// without it, one call per request (the one-call contract). Either way
// each request gets its own token's decision in its callback.
func TestAuthzBatchOnlyWhenEnabledForExternal(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("authz-batch=%v", batch), func(t *testing.T) {
			real := authz.NewServer(authz.Config{})
			var mu sync.Mutex
			paths := map[string]int{}
			authzURL := serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
				mu.Lock()
				paths[string(ctx.Path())]++
				mu.Unlock()
				time.Sleep(30 * time.Millisecond) // on purpose: calls overlap, so batches can form
				real.Handler(ctx)
			})
			rcv := startReceiver(t)
			svc := startService(t, node.Config{AuthzURL: authzURL, AuthzBatch: batch, AuthzConcurrency: 8, AllowPrivateCallbacks: true})
			const n = 40
			want := map[string]string{} // request id -> status in its callback
			var wmu sync.Mutex
			var wg sync.WaitGroup
			for i := range n {
				token, status := "validDriverToken1234567", "allowed"
				if i%2 == 1 {
					token, status = "blockedDriverToken12345", "not_allowed"
				}
				wg.Go(func() {
					id := mustAccept(t, svc, token, rcv.URL+"/cb")
					wmu.Lock()
					want[id] = status
					wmu.Unlock()
				})
			}
			wg.Wait()
			eventually(t, 20*time.Second, 20*time.Millisecond, func() error {
				for id := range want {
					if len(rcv.byID(id)) == 0 {
						return fmt.Errorf("no callback yet for %s", id)
					}
				}
				return nil
			})
			for id, status := range want {
				if body := rcv.byID(id)[0].Body; !strings.Contains(body, `"status":"`+status+`"`) {
					t.Errorf("%s: callback %s; want status %s", id, body, status)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case !batch && (len(paths) != 1 || paths["/authorize"] != n):
				t.Errorf("without --authz-batch the service got %v; want %d calls to /authorize only", paths, n)
			case batch && paths["/authorize/batch"] == 0:
				t.Errorf("with --authz-batch the service got %v; want batches", paths)
			}
		})
	}
}
