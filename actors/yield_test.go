package actors

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

// The controller's states, window by window: it probes a busy front every
// yieldProbeEvery windows, stays paced while the front takes more paced
// than at full speed, and goes back to full speed when a release does not
// slow the front down or the front is idle. A front with few accepts in
// flight (a steady load the machine keeps up with) is never probed.
func TestYielderProbes(t *testing.T) {
	var y yielder
	var accepted int64
	accepting := int64(yieldMinAccepting) // accepts in flight at every tick
	// window runs one window of ticks with n accepts and returns whether
	// the pipeline is paced after it (and checks that it did not change
	// before the window's last tick).
	window := func(n int64) bool {
		t.Helper()
		was := y.state.paced()
		accepted += n
		for i := range yieldWindow - 1 {
			if got := y.step(accepted, accepting); got != was {
				t.Fatalf("tick %d of the window: paced %v, want %v until the window ends", i, got, was)
			}
		}
		return y.step(accepted, accepting)
	}
	states := func(ns ...int64) string {
		var got []bool
		for _, n := range ns {
			got = append(got, window(n))
		}
		return fmt.Sprint(got)
	}
	// A trickle under yieldMinAccepts never probes.
	if got := states(50, 50, 50, 50, 50, 50, 50); got != "[false false false false false false false]" {
		t.Fatalf("trickle: %s", got)
	}
	// A steady front probes after yieldProbeEvery windows; the probe window
	// takes no more than before: back to full speed, and again 5 later.
	y = yielder{}
	if got := states(300, 300, 300, 300, 300, 310, 300, 300, 300, 300, 300); got != "[false false false false true false false false false false true]" {
		t.Fatalf("steady front: %s", got)
	}
	// The front takes 2.5 times more while probed: hot, paced; after
	// yieldProbeEvery paced windows, one at full speed.
	if got := states(750, 750, 750, 750, 750, 750); got != "[true true true true true false]" {
		t.Fatalf("hot front: %s", got)
	}
	// Released, the front slows down (at most 4/5 of the paced window's):
	// paced again.
	if got := states(300, 750, 750, 750, 750, 750); got != "[true true true true true false]" {
		t.Fatalf("release probe while hot: %s", got)
	}
	// The next release takes as much: the front was not waiting for the
	// pipeline any more; full speed.
	if got := states(750); got != "[false]" {
		t.Fatalf("release of a front that is no longer hot: %s", got)
	}
	// Paced, the front goes idle (the burst is over): full speed at the
	// window's end.
	y = yielder{}
	if got := states(300, 300, 300, 300, 300, 750, 10); got != "[false false false false true true false]" {
		t.Fatalf("burst over: %s", got)
	}
	// The same steady front with fewer accepts in flight (each answered
	// at once): never probed.
	y, accepting = yielder{}, yieldMinAccepting-1
	if got := states(300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300); got != "[false false false false false false false false false false false]" {
		t.Fatalf("steady front, few accepts in flight: %s", got)
	}
	// Busy in one tick of the window only, not on average: not probed.
	y = yielder{}
	for range yieldProbeEvery + 1 {
		for i := range yieldWindow {
			accepting = 0
			if i == 0 {
				accepting = yieldMinAccepting * (yieldWindow - 1)
			}
			accepted += 300
			if y.step(accepted, accepting) {
				t.Fatal("probed a front busy in one tick of each window")
			}
		}
	}
}

// While the front is hot, the supervisor admits yieldPacedPerTick requests
// a tick into the pipeline, oldest first from the store, and the rest wait
// there; once the front is idle, the pipeline drains the backlog at full
// speed, and every request is decided and called back. The ticks come from
// the test, not a clock.
func TestPipelineYieldsToAHotFront(t *testing.T) {
	ticks := make(chan time.Time)
	stepped := make(chan bool, 1)
	authz := &fakeAuthz{}
	recv := &fakeReceiver{}
	st := openStore(t, vfs.NewMem())
	e, err := Start(Config{Store: st, Authorize: authz.authorize, Deliver: recv.deliver, Logger: testLogger(t),
		DecisionTimeout: time.Hour, yieldTicks: ticks, yieldStepped: stepped,
		// The test's accepts run one at a time; the controller sees a
		// front with many waiting, as in a burst.
		yieldAccepting: func() int64 { return yieldMinAccepting }})
	if err != nil {
		t.Fatal(err)
	}
	failOnDeadLetters(t, e)
	t.Cleanup(func() { e.Stop(0); _ = st.Close() })

	accepted := 0
	accept := func(n int) {
		t.Helper()
		for range n {
			if _, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
				DriverToken: fmt.Sprintf("yieldDriverToken%06d", accepted), CallbackURL: "http://127.0.0.1:1/cb"}); err != nil {
				t.Fatal(err)
			}
			accepted++
		}
	}
	tick := func() bool { t.Helper(); ticks <- time.Now(); return <-stepped }
	waitPending := func(want int64) {
		t.Helper()
		testwait.Eventually(t, 10*time.Second, time.Millisecond, func() error {
			if n := st.Count(session.StatePending); n != want {
				return fmt.Errorf("%d pending, want %d", n, want)
			}
			if n := e.LiveRequests(); n != 0 {
				return fmt.Errorf("%d live request actors", n)
			}
			return nil
		})
	}
	// A steady front, each request decided at once, until the probe.
	for w := range yieldProbeEvery {
		accept(100)
		waitPending(0)
		for i := range yieldWindow {
			if paced := tick(); paced != (w == yieldProbeEvery-1 && i == yieldWindow-1) {
				t.Fatalf("window %d tick %d: paced %v", w, i, paced)
			}
		}
	}
	// Probing: of 200 accepted, the tick's 20 are admitted; the rest wait,
	// and each tick admits 20 more.
	if !e.Paced() {
		t.Fatal("not paced while probing")
	}
	accept(200)
	waitPending(200 - yieldPacedPerTick)
	for i := range yieldWindow - 1 {
		if !tick() {
			t.Fatalf("probe tick %d: not paced", i)
		}
		waitPending(int64(200 - yieldPacedPerTick*(i+2)))
	}
	// The front took twice as much as at full speed: hot.
	if !tick() {
		t.Fatal("not paced after a probe in which the front took twice as much")
	}
	accept(500)
	waitPending(500 - yieldPacedPerTick)
	left := 500 - yieldPacedPerTick
	for range yieldWindow {
		if !tick() {
			t.Fatal("not paced while the front is hot")
		}
		left -= yieldPacedPerTick
		waitPending(int64(left))
	}
	// The front goes idle: the pace holds to the end of the window, which
	// lifts it, and the backlog drains at once.
	for range yieldWindow - 1 {
		if !tick() {
			t.Fatal("not paced within the window")
		}
		left -= yieldPacedPerTick
		waitPending(int64(left))
	}
	if tick() {
		t.Fatal("still paced after an idle window")
	}
	waitPending(0)
	testwait.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if n := recv.total(); n != accepted {
			return fmt.Errorf("%d of %d called back", n, accepted)
		}
		return nil
	})
	if calls, _ := authz.stats(); calls != accepted {
		t.Errorf("%d authorization calls, want %d", calls, accepted)
	}
}

// After a window without accepts at full speed, the controller sleeps: it
// takes no ticks (an idle node does not wake up fifty times a second)
// until an accept wakes it, and its next window counts that accept. The
// ticks come from the test.
func TestYieldControllerSleepsWhileIdle(t *testing.T) {
	ticks := make(chan time.Time)
	stepped := make(chan bool, 1)
	paused := make(chan bool, 1)
	recv := &fakeReceiver{}
	st := openStore(t, vfs.NewMem())
	e, err := Start(Config{Store: st, Authorize: (&fakeAuthz{}).authorize, Deliver: recv.deliver, Logger: testLogger(t),
		DecisionTimeout: time.Hour, yieldTicks: ticks, yieldStepped: stepped, yieldPaused: paused})
	if err != nil {
		t.Fatal(err)
	}
	failOnDeadLetters(t, e)
	t.Cleanup(func() { e.Stop(0); _ = st.Close() })

	window := func() {
		t.Helper()
		for range yieldWindow {
			ticks <- time.Now()
			if <-stepped {
				t.Fatal("paced while idle")
			}
		}
	}
	pause := func() bool {
		t.Helper()
		select {
		case p := <-paused:
			return p
		case <-time.After(10 * time.Second):
			t.Fatal("the controller neither slept nor woke")
			return false
		}
	}
	window()
	if !pause() {
		t.Fatal("resumed without having slept")
	}
	if _, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
		DriverToken: "sleepyDriverToken000001", CallbackURL: "http://127.0.0.1:1/cb"}); err != nil {
		t.Fatal(err)
	}
	if pause() {
		t.Fatal("an accept did not wake the controller")
	}
	// The window after the wake took the accept: no sleep after it; the
	// one after, empty, sleeps again.
	window()
	select {
	case p := <-paused:
		t.Fatalf("paused %v after a window that took an accept", p)
	default:
	}
	window()
	if !pause() {
		t.Fatal("did not sleep after an empty window")
	}
	testwait.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if n := recv.total(); n != 1 {
			return fmt.Errorf("%d callbacks", n)
		}
		return nil
	})
}

// With the real ticker, the controller falls asleep when idle, an accept
// wakes it (the ticker runs again), and it sleeps again once the front is
// idle once more.
func TestYieldControllerSleepsWithTheRealTicker(t *testing.T) {
	recv := &fakeReceiver{}
	st := openStore(t, vfs.NewMem())
	e, err := Start(Config{Store: st, Authorize: (&fakeAuthz{}).authorize, Deliver: recv.deliver, Logger: testLogger(t),
		DecisionTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	failOnDeadLetters(t, e)
	t.Cleanup(func() { e.Stop(0); _ = st.Close() })
	asleep := func() error {
		if !e.yieldAsleep.Load() {
			return fmt.Errorf("the yield controller is awake")
		}
		return nil
	}
	testwait.Eventually(t, 10*time.Second, time.Millisecond, asleep)
	if _, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
		DriverToken: "sleepyDriverToken000002", CallbackURL: "http://127.0.0.1:1/cb"}); err != nil {
		t.Fatal(err)
	}
	// Woken, it stays awake for at least a window (ten ticks).
	testwait.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if asleep() == nil {
			return fmt.Errorf("the accept did not wake the yield controller")
		}
		return nil
	})
	testwait.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if n := recv.total(); n != 1 {
			return fmt.Errorf("%d callbacks", n)
		}
		return asleep()
	})
}
