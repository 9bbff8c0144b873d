package actors

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// Under churn (a receiver failing two attempts in three, a tiny limit, so
// that retries go to the store and refills race the decisions' own
// DeliverCallback), no attempt is ever made before its record's
// NextAttemptAt, none twice at once, and every callback is delivered
// exactly once once the receiver is healthy.
func TestCallbacksUnderChurn(t *testing.T) {
	for _, limit := range []int{1, 3} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			const n = 400
			st := openStore(t, vfs.NewMem())
			recv := newCheckedReceiver(st)
			var healthy atomic.Bool
			deliver := func(d time.Time, id string, r session.Request, s session.Status) DeliveryResult {
				recv.down.Store(!healthy.Load() && rand.IntN(3) != 0)
				return recv.deliver(d, id, r, s)
			}
			h := startOn(t, Config{Store: st, CallbackQueueLimit: limit, CallbackMaxAttempts: 100000, CallbackConcurrency: 4,
				CallbackSchedule: schedule.Doubling(time.Millisecond, 15*time.Millisecond), CallbackMaxAge: time.Hour, Deliver: deliver},
				&fakeAuthz{}, &fakeReceiver{})
			peak := samplePeak(t, h.engine.CallbacksPending)
			ids := make([]string, n)
			for i := range ids {
				ids[i] = h.mustAccept(fmt.Sprintf("churnToken%014d", i)).ID
				if i%50 == 0 {
					time.Sleep(20 * time.Millisecond) // on purpose: accepts spread out, racing the refills
				}
			}
			// Churn a while: every callback has failed once or more on
			// average before the receiver is healthy.
			testwait.Eventually(t, 30*time.Second, time.Millisecond, func() error {
				recv.mu.Lock()
				defer recv.mu.Unlock()
				if recv.failures < n {
					return fmt.Errorf("%d failed attempts, want %d", recv.failures, n)
				}
				return nil
			})
			healthy.Store(true)
			testwait.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
				if d := st.Count(session.StateDelivered); d != n {
					return fmt.Errorf("%d of %d delivered", d, n)
				}
				return nil
			})
			recv.checkDeliveredOnce(t, ids)
			if p := peak.Load(); p > int64(limit) {
				t.Errorf("the sender held %d callbacks at once, want at most %d", p, limit)
			}
		})
	}
}

// A DeliverCallback that arrives late, after its record was already taken
// from the store and delivered (or set to wait for a retry), changes
// nothing: the attempt follows the stored record, not the message's copy.
func TestLateDeliverCallbackFollowsTheStore(t *testing.T) {
	recv := &fakeReceiver{script: []DeliveryResult{{}, {StatusCode: 503, Err: errors.New("503"), Retryable: true}}}
	h := startEngine(t, Config{CallbackSchedule: schedule.Doubling(time.Hour, time.Hour)}, &fakeAuthz{}, recv)
	late := func(rec session.Record) *DeliverCallback { // the copy the request actor sent
		rec.State, rec.CallbackAttempts, rec.NextAttemptAt, rec.DeliveredAt = session.StateDecided, 0, rec.DecidedAt, time.Time{}
		rec.Attempts, rec.LastError = nil, ""
		return &DeliverCallback{Record: rec}
	}

	delivered := h.waitState(h.mustAccept("lateDeliverToken00000001").ID, session.StateDelivered)
	retrying := h.mustAccept("lateDeliverToken00000002")
	testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
		if rec, err := h.store.Get(retrying.ID); err != nil || rec.CallbackAttempts != 1 {
			return fmt.Errorf("not yet waiting for its retry: %+v %v", rec, err)
		}
		return nil
	})
	idle := h.engine.idleAttempts.Load()
	for _, rec := range []session.Record{delivered, retrying} {
		h.engine.system.Root.Send(h.engine.sender, late(rec))
	}
	// Both late messages were taken: each led to an attempt that found
	// nothing to send, or (the bug) sent it again.
	testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
		if n := h.engine.idleAttempts.Load() - idle + int64(recv.total()) - 2; n < 2 {
			return fmt.Errorf("%d of 2 late DeliverCallbacks attempted", n)
		}
		return nil
	})
	for _, rec := range []session.Record{delivered, retrying} {
		if got := recv.callbacks(rec.ID); len(got) != 1 {
			t.Errorf("%s: %d attempts, want 1: a late DeliverCallback sent it again", rec.ID, len(got))
		}
	}
}

// A decision written with a time before records already read from the
// store (a request actor takes the time before its write), and left in the
// store because the sender was full, is still delivered. (With the old
// cursor over the due index, it fell behind the cursor.)
func TestLeftDecisionDecidedEarlierIsDelivered(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	var (
		mu      sync.Mutex
		gates   = map[string]chan struct{}{} // closed to let that id's delivery end
		started = map[string]bool{}
	)
	cfg := Config{Store: st, CallbackQueueLimit: 1, CallbackConcurrency: 1}
	cfg.Deliver = func(_ time.Time, id string, _ session.Request, _ session.Status) DeliveryResult {
		mu.Lock()
		started[id] = true
		g := gates[id]
		mu.Unlock()
		if g != nil {
			<-g
		}
		return DeliveryResult{StatusCode: 204}
	}
	h := startOn(t, cfg, &fakeAuthz{}, &fakeReceiver{})

	now := time.Now().UTC()
	decide := func(i int, at time.Time, gate chan struct{}) session.Record {
		t.Helper()
		mu.Lock()
		gates[storedID(i)] = gate
		mu.Unlock()
		dec := storeDecided(t, st, i, at)
		h.engine.system.Root.Send(h.engine.sender, &DeliverCallback{Record: dec})
		return dec
	}
	inFlight := func(id string) {
		t.Helper()
		testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if !started[id] {
				return fmt.Errorf("%s is not being delivered", id)
			}
			return nil
		})
	}

	// a takes the one slot; b is left in the store, and read back once a
	// ends.
	gateA, gateB := make(chan struct{}), make(chan struct{})
	a := decide(0, now.Add(-time.Second), gateA)
	inFlight(a.ID)
	b := decide(1, now.Add(-time.Second), gateB)
	close(gateA)
	inFlight(b.ID)
	// c was decided before b, and is written only now, while b holds the
	// slot.
	c := decide(2, now.Add(-2*time.Second), nil)
	close(gateB)
	h.waitState(c.ID, session.StateDelivered)
}

// The wall clock steps back (an NTP correction) after a refill has read
// past an entry: a retry planned then lands before what was read, and is
// still delivered.
func TestRetryAfterClockStepsBackIsDelivered(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	var offset atomic.Int64
	base := time.Now().UTC()
	p := storeDecided(t, st, 0, base.Add(-2*time.Second))
	q := storeDecided(t, st, 1, base.Add(-time.Second))
	var (
		mu    sync.Mutex
		tries = map[string]int{}
	)
	cfg := Config{Store: st, CallbackQueueLimit: 1, CallbackConcurrency: 1,
		CallbackSchedule: schedule.Doubling(10*time.Millisecond, time.Minute), CallbackMaxAttempts: 10, CallbackMaxAge: time.Hour}
	cfg.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	cfg.Deliver = func(_ time.Time, id string, _ session.Request, _ session.Status) DeliveryResult {
		mu.Lock()
		tries[id]++
		n := tries[id]
		mu.Unlock()
		switch {
		case id == p.ID: // waits long for its retry
			return DeliveryResult{Err: errors.New("503"), Retryable: true, RetryAfter: 30 * time.Second}
		case id == q.ID && n == 1: // planned once the clock stepped back
			offset.Store(int64(-time.Hour))
			return DeliveryResult{Err: errors.New("503"), Retryable: true, RetryAfter: 300 * time.Millisecond}
		}
		return DeliveryResult{StatusCode: 204}
	}
	startOn(t, cfg, &fakeAuthz{}, &fakeReceiver{}).waitState(q.ID, session.StateDelivered)
}

// An operator's redelivery lands between a failed outcome's write and the
// sender's handling of it: its DeliverCallback finds the id still owned.
// Before the failed outcome lets the id go, a refill (after r's delivery)
// passes over the redelivered record, which is owned and due. The
// redelivery still goes out.
func TestRedeliveryRacingTheFailedOutcome(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	now := time.Now().UTC()
	x := storeDecided(t, st, 0, now.Add(-3*time.Second))
	y := storeDecided(t, st, 1, now.Add(-2*time.Second))
	r := storeDecided(t, st, 2, now.Add(-time.Second)) // left in the store at start: the limit is 2
	var xCalls atomic.Int64
	yGo := make(chan struct{})
	var h *harness
	started := make(chan struct{})
	var once sync.Once
	cfg := Config{Store: st, CallbackQueueLimit: 2, CallbackConcurrency: 2, CallbackHostConcurrency: 2, CallbackMaxAttempts: 1}
	cfg.Deliver = func(_ time.Time, id string, _ session.Request, _ session.Status) DeliveryResult {
		if id == y.ID {
			<-yGo
		}
		if id == x.ID && xCalls.Add(1) == 1 {
			return DeliveryResult{Err: errors.New("500"), Retryable: true}
		}
		return DeliveryResult{StatusCode: 204}
	}
	// Called on the attempt's goroutine after its outcome is stored, and
	// before the sender hears of it.
	cfg.Observe.CallbackAttempt = func(result string, _ time.Duration) {
		if result != "failed" {
			return
		}
		once.Do(func() {
			<-started
			if _, err := h.engine.Redeliver(x.ID); err != nil {
				t.Error(err)
			}
			// y's outcome has its refill take r; r's has its refill pass
			// over x, owned still and due again.
			close(yGo)
			// On the attempt's goroutine: Poll, not Eventually (no t.Fatal here).
			if err := testwait.Poll(10*time.Second, time.Millisecond, func() error {
				rec, err := st.Get(r.ID)
				if err == nil && rec.State == session.StateDelivered && h.engine.CallbacksPending() == 1 {
					return nil
				}
				return fmt.Errorf("r is %s (%v), %d callbacks held; want r delivered and x's alone held", rec.State, err, h.engine.CallbacksPending())
			}); err != nil {
				t.Error(err)
			}
		})
	}
	h = startOn(t, cfg, &fakeAuthz{}, &fakeReceiver{})
	close(started)
	h.waitState(x.ID, session.StateDelivered)
}
