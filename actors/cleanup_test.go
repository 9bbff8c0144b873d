package actors

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"

	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/http/webhook"
	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// Goroutines the leak check ignores, each named; all are fasthttp's, none
// is the engine's. (Pebble, once the store is closed, and protoactor,
// once the system is shut down, leave none.) The first two are
// process-wide: started once, never stopped. The other two belong to one
// HTTP client (the test's here; in the service, the authz and webhook
// clients, which live as long as the process). fasthttp has no way to stop
// them: each ends by itself at its next wake once its client has no
// connection left, up to 10s (the default MaxIdleConnDuration) later.
var ignoredGoroutines = []goleak.Option{
	// The Date header's clock: serverDateOnce.Do(updateServerDate), at the
	// first fasthttp.Server of the process (header.go).
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	// The DNS cache cleaner of fasthttp's package-level defaultDialer
	// (tcpdialer.go), which a fasthttp.HostClient dials with by default.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
	// The idle-connection cleaner of one fasthttp.HostClient (the authz
	// client's; the webhook client's for the receiver's host).
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	// The host-client cleaner of one fasthttp.Client (the webhook client's).
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
}

// serveLoopback serves h on 127.0.0.1:0 until the returned stop is called.
func serveLoopback(t *testing.T, h fasthttp.RequestHandler) (url string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A short MaxIdleWorkerDuration: the worker pool's cleaner ends at
	// its next wake after Shutdown, by default 10s later.
	srv := &fasthttp.Server{Handler: h, MaxIdleWorkerDuration: 50 * time.Millisecond}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	var once sync.Once
	stop = func() { once.Do(func() { _ = srv.Shutdown(); <-done }) }
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// A normal burst through a real engine (real HTTP on loopback to a fake
// authorization service and a fake receiver), then a shutdown: every
// request is decided and called back once, no message becomes a dead
// letter, and no goroutine started by the engine outlives Stop.
func TestBurstAndShutdownLeaveNothingBehind(t *testing.T) {
	const n = 300
	before := goleak.IgnoreCurrent()

	authzURL, stopAuthz := serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"allowed"}`)
	})
	var (
		mu  sync.Mutex
		got = map[string]int{} // callbacks by webhook-id
	)
	recvURL, stopRecv := serveLoopback(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		got[string(ctx.Request.Header.Peek("webhook-id"))]++
		mu.Unlock()
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	})
	client, err := authz.NewClient(authz.ClientConfig{URL: authzURL})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := webhook.New(webhook.Config{AllowPrivate: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t, vfs.NewMem())
	e, err := Start(Config{Store: st, Logger: testLogger(t), Authorize: client.Authorize,
		Deliver: func(deadline time.Time, id string, req session.Request, status session.Status) DeliveryResult {
			r := sender.Send(deadline, id, req, status)
			return DeliveryResult{StatusCode: r.StatusCode, Err: r.Err, Retryable: r.Retryable, RetryAfter: r.RetryAfter}
		}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		dlMu        sync.Mutex
		deadLetters []string
	)
	e.System().EventStream.Subscribe(func(evt any) {
		if dl, ok := evt.(*actor.DeadLetterEvent); ok {
			dlMu.Lock()
			deadLetters = append(deadLetters, fmt.Sprintf("%T to %v", dl.Message, dl.PID))
			dlMu.Unlock()
		}
	})

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range 10 {
		wg.Go(func() {
			for i := range n / 10 {
				if _, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
					DriverToken: fmt.Sprintf("burstDriverToken%02d%06d", g, i), CallbackURL: recvURL + "/cb"}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testwait.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
		if d := st.Count(session.StateDelivered); d != n {
			return fmt.Errorf("%d of %d delivered", d, n)
		}
		return nil
	})

	e.Stop(5 * time.Second)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	stopAuthz()
	stopRecv()
	sender.CloseIdleConnections()

	mu.Lock()
	for id, k := range got {
		if k != 1 {
			t.Errorf("%s called back %d times, want once", id, k)
		}
	}
	if len(got) != n {
		t.Errorf("%d requests called back, want %d", len(got), n)
	}
	mu.Unlock()
	dlMu.Lock()
	for _, dl := range deadLetters {
		t.Errorf("dead letter: %s", dl)
	}
	dlMu.Unlock()
	goleak.VerifyNone(t, append([]goleak.Option{before}, ignoredGoroutines...)...)
}

// Stop stops the timers of the actors it stops: a request actor's
// deadline and its retry after a failed call, and the callback sender's
// wake for a callback waiting for its retry. None of them fires into a
// stopped actor (a dead letter) once its time comes.
func TestStopCancelsTimers(t *testing.T) {
	authz := &fakeAuthz{}
	authz.down.Store(true) // every call fails: each request waits for its retry
	recv := &fakeReceiver{script: []DeliveryResult{{StatusCode: 503, Err: errors.New("503"), Retryable: true}}}
	st := openStore(t, vfs.NewMem())
	// A decided request whose first attempt fails: its retry waits in the
	// store, and the sender's wake is armed for it.
	waiting := storeDecided(t, st, 0, time.Now().UTC())
	const decisionTimeout, retry = 300 * time.Millisecond, 200 * time.Millisecond
	cfg := Config{Store: st, DecisionTimeout: decisionTimeout, AuthzRetryBackoff: retry, AuthzBreakerCooldown: retry,
		CallbackSchedule: schedule.Delays{0, retry}, Authorize: authz.authorize, Deliver: recv.deliver, Logger: testLogger(t)}
	e, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	var (
		mu     sync.Mutex
		timers []string
	)
	e.System().EventStream.Subscribe(func(evt any) {
		if dl, ok := evt.(*actor.DeadLetterEvent); ok {
			switch dl.Message.(type) {
			case *deadlinePassed, *retryAuthorize, *wakeCallbacks:
				mu.Lock()
				timers = append(timers, fmt.Sprintf("%T to %v", dl.Message, dl.PID))
				mu.Unlock()
			}
		}
	})
	var last session.Record
	for i := range 5 {
		last = (&harness{t: t, engine: e}).mustAccept(fmt.Sprintf("timerDriverToken%08d", i))
	}
	testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
		if calls, _ := authz.stats(); calls < 5 {
			return fmt.Errorf("%d of 5 requests called: not every one waits for its retry yet", calls)
		}
		if rec, err := st.Get(waiting.ID); err != nil || rec.CallbackAttempts != 1 {
			return fmt.Errorf("the decided request has not failed its first attempt: %+v %v", rec, err)
		}
		return nil
	})
	if e.LiveRequests() != 5 {
		t.Fatalf("%d live requests, want 5 waiting for a retry or their deadline", e.LiveRequests())
	}
	e.Stop(0)
	// The point is that the timers' times pass: wait for the last of
	// them (the last request's deadline, after every retry and wake).
	time.Sleep(time.Until(last.DecideBy) + 100*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, dl := range timers {
		t.Errorf("a timer outlived its actor: dead letter %s", dl)
	}
}
