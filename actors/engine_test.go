package actors

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// The tests run a real actor system over a real Pebble store on vfs.NewMem.
// The authorization call and the callback POST are function seams: fakeAuthz
// and fakeReceiver are small recorders that can be slow, fail, or answer each
// status.

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func openStore(t *testing.T, fs vfs.FS) *persistence.Store {
	t.Helper()
	st, err := persistence.Open(persistence.Config{Dir: "data", FS: fs, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// fakeAuthz answers by driver token: a token starting with a status name
// answers that status; "fail" fails; "slow" sleeps past any deadline.
type fakeAuthz struct {
	mu      sync.Mutex
	calls   int
	inNow   int
	peak    int
	delay   time.Duration
	hang    bool        // sleep the whole delay, ignoring the call's deadline
	failN   int         // fail the first failN calls
	down    atomic.Bool // fail every call while set
	slow    string      // this token's call hangs for slowFor
	slowFor time.Duration
	slowEnd atomic.Bool // the slow call has returned
	answers map[string]session.Status
	order   []string // tokens, in the order their calls began
}

func (f *fakeAuthz) authorize(deadline time.Time, stationID, token string) (session.Status, string, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.order = append(f.order, token)
	f.inNow++
	f.peak = max(f.peak, f.inNow)
	delay, failN, hang := f.delay, f.failN, f.hang
	st, ok := f.answers[token]
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inNow--; f.mu.Unlock() }()

	if token == f.slow {
		time.Sleep(f.slowFor) // slow on purpose
		f.slowEnd.Store(true)
	} else if hang {
		time.Sleep(delay) // a service that hangs on purpose, past the deadline
	} else if delay > 0 {
		select {
		case <-time.After(delay):
		case <-time.After(time.Until(deadline)):
			return "", "", errors.New("fake: timeout")
		}
	}
	if n <= failN || f.down.Load() {
		return "", "", errors.New("fake: 500")
	}
	if !ok {
		return session.StatusInvalid, "unknown_token", nil
	}
	return st, "", nil
}

func (f *fakeAuthz) stats() (calls, peak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.peak
}

// fakeReceiver records callbacks and answers with the results in script
// (then success).
type fakeReceiver struct {
	mu     sync.Mutex
	got    map[string][]session.Status // by request id
	script []DeliveryResult
}

func (r *fakeReceiver) deliver(deadline time.Time, id string, req session.Request, status session.Status) DeliveryResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = make(map[string][]session.Status)
	}
	r.got[id] = append(r.got[id], status)
	if len(r.script) > 0 {
		res := r.script[0]
		r.script = r.script[1:]
		return res
	}
	return DeliveryResult{}
}

func (r *fakeReceiver) callbacks(id string) []session.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]session.Status(nil), r.got[id]...)
}

func (r *fakeReceiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.got {
		n += len(v)
	}
	return n
}

type harness struct {
	t      *testing.T
	engine *Engine
	store  *persistence.Store
	authz  *fakeAuthz
	recv   *fakeReceiver

	lateAnswers atomic.Int64 // *AuthzAnswered dead letters: answers that came too late
}

// startEngine starts an engine over a fresh in-memory store, fails the test
// on any unexpected dead letter, and stops everything at cleanup.
func startEngine(t *testing.T, cfg Config, authz *fakeAuthz, recv *fakeReceiver) *harness {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = openStore(t, vfs.NewMem())
	}
	return startOn(t, cfg, authz, recv)
}

func startOn(t *testing.T, cfg Config, authz *fakeAuthz, recv *fakeReceiver) *harness {
	t.Helper()
	cfg.Authorize = authz.authorize
	if cfg.Deliver == nil {
		cfg.Deliver = recv.deliver
	}
	cfg.Logger = testLogger(t)
	e, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, engine: e, store: cfg.Store, authz: authz, recv: recv}
	failOnDeadLetters(t, e)
	e.System().EventStream.Subscribe(func(evt any) {
		if dl, ok := evt.(*actor.DeadLetterEvent); ok {
			if _, late := dl.Message.(*AuthzAnswered); late {
				h.lateAnswers.Add(1)
			}
		}
	})
	t.Cleanup(func() {
		// No grace: what a test leaves running (a hanging call, a slow
		// receiver) is cut off, not waited for.
		e.Stop(0)
		_ = cfg.Store.Close()
	})
	return h
}

// failOnDeadLetters fails t on every dead letter of e that
// expectedDeadLetter does not name.
func failOnDeadLetters(t *testing.T, e *Engine) {
	t.Helper()
	e.System().EventStream.Subscribe(func(evt any) {
		if dl, ok := evt.(*actor.DeadLetterEvent); ok && e.expectedDeadLetter(dl) == "" {
			t.Errorf("unexpected dead letter %T to %v", dl.Message, dl.PID)
		}
	})
}

func (h *harness) mustAccept(token string) session.Record {
	h.t.Helper()
	rec, err := h.engine.Accept(session.Request{
		StationID:   "123e4567-e89b-12d3-a456-426614174000",
		DriverToken: token,
		CallbackURL: "http://127.0.0.1:1/cb",
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

// waitLateAnswers waits until n answers have come too late for their
// request actor (dead letters).
func (h *harness) waitLateAnswers(n int64) {
	h.t.Helper()
	testwait.Eventually(h.t, 10*time.Second, time.Millisecond, func() error {
		if got := h.lateAnswers.Load(); got < n {
			return fmt.Errorf("%d late answers, want %d", got, n)
		}
		return nil
	})
}

// waitQuiet waits until nothing is left that could act: no request actor
// lives (a late answer can only be a dead letter), no authz call runs, and
// the sender holds no callback.
func (h *harness) waitQuiet() {
	h.t.Helper()
	testwait.Eventually(h.t, 10*time.Second, time.Millisecond, func() error {
		h.authz.mu.Lock()
		calls := h.authz.inNow
		h.authz.mu.Unlock()
		if live, cbs := h.engine.LiveRequests(), h.engine.CallbacksPending(); live != 0 || calls != 0 || cbs != 0 {
			return fmt.Errorf("%d request actors live, %d authz calls running, %d callbacks held", live, calls, cbs)
		}
		return nil
	})
}

func (h *harness) waitState(id string, want session.State) session.Record {
	h.t.Helper()
	var rec session.Record
	testwait.Eventually(h.t, 10*time.Second, 5*time.Millisecond, func() error {
		var err error
		rec, err = h.store.Get(id)
		if err != nil {
			return err
		}
		if rec.State != want {
			return fmt.Errorf("%s is %s, want %s", id, rec.State, want)
		}
		return nil
	})
	return rec
}

func TestDecidesEachStatus(t *testing.T) {
	authz := &fakeAuthz{answers: map[string]session.Status{
		"allowedDriverToken000001":  session.StatusAllowed,
		"notAllowedDriverToken0001": session.StatusNotAllowed,
		"unknownAnswerToken0000001": session.StatusUnknown,
	}}
	h := startEngine(t, Config{}, authz, &fakeReceiver{})
	for token, want := range map[string]session.Status{
		"allowedDriverToken000001":  session.StatusAllowed,
		"notAllowedDriverToken0001": session.StatusNotAllowed,
		"unknownAnswerToken0000001": session.StatusUnknown, // the service itself may answer unknown
		"notInTheListToken0000001":  session.StatusInvalid,
	} {
		rec := h.mustAccept(token)
		got := h.waitState(rec.ID, session.StateDelivered)
		if got.Status != want || got.DecidedBy != session.ByAuthz {
			t.Errorf("%s: decided %s by %s, want %s by authz", token, got.Status, got.DecidedBy, want)
		}
		if cbs := h.recv.callbacks(rec.ID); len(cbs) != 1 || cbs[0] != want {
			t.Errorf("%s: callbacks %v, want [%s]", token, cbs, want)
		}
		if got.CallbackAttempts != 1 || got.DeliveredAt.IsZero() {
			t.Errorf("%s: attempts %d delivered_at %v", token, got.CallbackAttempts, got.DeliveredAt)
		}
	}
}

// The deadline is fixed: failed calls answered every few milliseconds (each
// one a message to the request actor) must not push it out.
func TestDeadlineIsFixed(t *testing.T) {
	authz := &fakeAuthz{failN: 1 << 30}
	h := startEngine(t, Config{DecisionTimeout: 400 * time.Millisecond, AuthzRetryBackoff: 5 * time.Millisecond}, authz, &fakeReceiver{})
	rec := h.mustAccept("alwaysFailingToken000001")
	got := h.waitState(rec.ID, session.StateDelivered)
	if got.Status != session.StatusUnknown || got.DecidedBy != session.ByTimeout {
		t.Fatalf("decided %s by %s, want unknown by timeout", got.Status, got.DecidedBy)
	}
	if calls, _ := authz.stats(); calls < 3 {
		t.Errorf("%d calls: want the failed call retried while the deadline allows", calls)
	}
	// A sliding timeout would fire a whole timeout (400ms) after the last
	// retry; a fixed one fires at the deadline.
	if late := got.DecidedAt.Sub(got.DecideBy); late < 0 || late > 300*time.Millisecond {
		t.Errorf("decided %v after the deadline, want within 300ms (never before)", late)
	}
	if got.Reason == "" {
		t.Error("a timeout should say why in its reason")
	}
}

func TestSlowAnswerIsUnknownAndLateAnswerChangesNothing(t *testing.T) {
	authz := &fakeAuthz{delay: time.Hour}
	// The fake gives up at the call's deadline, which is the request's.
	h := startEngine(t, Config{DecisionTimeout: 150 * time.Millisecond}, authz, &fakeReceiver{})
	rec := h.mustAccept("slowDriverToken000000001")
	got := h.waitState(rec.ID, session.StateDelivered)
	if got.Status != session.StatusUnknown || got.DecidedBy != session.ByTimeout {
		t.Fatalf("decided %s by %s, want unknown by timeout", got.Status, got.DecidedBy)
	}
	// The late "answer" (the fake's own timeout error) reaches a stopped
	// actor (or one about to stop): once nothing is left to take it,
	// check nothing else happened.
	h.waitQuiet()
	if cbs := h.recv.callbacks(rec.ID); len(cbs) != 1 {
		t.Fatalf("callbacks %v: want exactly one", cbs)
	}
}

func TestRetriesFailedCallsWhileDeadlineAllows(t *testing.T) {
	authz := &fakeAuthz{failN: 2, answers: map[string]session.Status{"retriedDriverToken000001": session.StatusAllowed}}
	h := startEngine(t, Config{AuthzRetryBackoff: time.Millisecond}, authz, &fakeReceiver{})
	rec := h.mustAccept("retriedDriverToken000001")
	got := h.waitState(rec.ID, session.StateDelivered)
	if got.Status != session.StatusAllowed {
		t.Fatalf("decided %s, want allowed after retries", got.Status)
	}
	if calls, _ := authz.stats(); calls != 3 {
		t.Errorf("%d calls, want 3 (two failures and the answer)", calls)
	}
}

func TestAuthzConcurrencyBound(t *testing.T) {
	authz := &fakeAuthz{delay: 5 * time.Millisecond}
	h := startEngine(t, Config{AuthzConcurrency: 4}, authz, &fakeReceiver{})
	var ids []string
	for i := range 200 {
		ids = append(ids, h.mustAccept(fmt.Sprintf("boundDriverToken%08d", i)).ID)
	}
	for _, id := range ids {
		h.waitState(id, session.StateDelivered)
	}
	calls, peak := authz.stats()
	if calls != 200 {
		t.Errorf("%d calls, want 200", calls)
	}
	if peak > 4 {
		t.Errorf("peak %d calls at once, want at most 4", peak)
	}
	if peak < 2 {
		t.Errorf("peak %d: the pool should run calls in parallel", peak)
	}
}

// A request whose deadline passes while it waits for a worker is decided
// unknown without a call.
func TestNoCallPastDeadline(t *testing.T) {
	// The one worker is held by a call that hangs past every deadline.
	authz := &fakeAuthz{delay: 600 * time.Millisecond, hang: true}
	h := startEngine(t, Config{AuthzConcurrency: 1, DecisionTimeout: 300 * time.Millisecond}, authz, &fakeReceiver{})
	var ids []string
	for i := range 10 {
		ids = append(ids, h.mustAccept(fmt.Sprintf("queuedDriverToken%07d", i)).ID)
	}
	for _, id := range ids {
		got := h.waitState(id, session.StateDelivered)
		if got.Status != session.StatusUnknown {
			t.Errorf("%s decided %s, want unknown", id, got.Status)
		}
	}
	// The running call ends: the pool hands the worker the nine waiting
	// calls, and answers each at once, too late (ten late answers).
	h.waitLateAnswers(10)
	if calls, _ := authz.stats(); calls != 1 {
		t.Errorf("%d calls, want 1: the others waited past their deadline", calls)
	}
}

// At most MaxInflight request actors live at once; the backlog beyond them
// waits in the store and is drained, every request decided and called
// back. (Its order: TestBacklogAdmittedOldestFirst.)
func TestMaxInflightBacklogDrains(t *testing.T) {
	authz := &fakeAuthz{delay: 2 * time.Millisecond}
	h := startEngine(t, Config{MaxInflight: 3, AuthzConcurrency: 8}, authz, &fakeReceiver{})
	peakLive := samplePeak(t, h.engine.LiveRequests)
	var ids []string
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				id := h.mustAccept(fmt.Sprintf("backlogToken%04d%08d", g, i)).ID
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		h.waitState(id, session.StateDelivered)
	}
	if p := peakLive.Load(); p > 3 {
		t.Errorf("peak %d live request actors, want at most 3", p)
	}
	if calls, peak := authz.stats(); calls != 100 || peak > 3 {
		t.Errorf("%d calls (want 100), peak %d (want <= 3 with 3 live actors)", calls, peak)
	}
}

// With one live request at a time, the backlog is admitted in the order
// the requests were accepted: the authorization service sees their calls
// in that order. Accepts keep arriving while slots free (one every
// millisecond, each call takes 4), so a new request could overtake the
// waiting ones.
func TestBacklogAdmittedOldestFirst(t *testing.T) {
	authz := &fakeAuthz{delay: 4 * time.Millisecond}
	h := startEngine(t, Config{MaxInflight: 1, AuthzConcurrency: 8}, authz, &fakeReceiver{})
	var tokens, ids []string
	for i := range 40 {
		token := fmt.Sprintf("oldestFirstToken%08d", i)
		tokens = append(tokens, token)
		ids = append(ids, h.mustAccept(token).ID)
		time.Sleep(time.Millisecond) // the arrival rate is the point: accepts go on while slots free
	}
	for _, id := range ids {
		h.waitState(id, session.StateDelivered)
	}
	authz.mu.Lock()
	defer authz.mu.Unlock()
	if !slices.Equal(authz.order, tokens) {
		t.Errorf("calls in the order\n%v\nwant the order of the accepts\n%v", authz.order, tokens)
	}
}

func TestMaxBacklog(t *testing.T) {
	authz := &fakeAuthz{delay: time.Hour}
	h := startEngine(t, Config{MaxInflight: 1, MaxBacklog: 2, DecisionTimeout: time.Minute}, authz, &fakeReceiver{})
	h.mustAccept("backlogFullToken00000001") // live, once the supervisor has it
	testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
		if n := h.engine.LiveRequests(); n != 1 {
			return fmt.Errorf("%d live", n)
		}
		return nil
	})
	h.mustAccept("backlogFullToken00000002") // waits
	h.mustAccept("backlogFullToken00000003") // waits
	testwait.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := h.engine.LiveRequests(); n != 1 {
			return fmt.Errorf("%d live", n)
		}
		return nil
	})
	_, err := h.engine.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000", DriverToken: "backlogFullToken00000004", CallbackURL: "http://x/"})
	if !errors.Is(err, ErrBacklogFull) {
		t.Fatalf("Accept = %v, want ErrBacklogFull", err)
	}
	if n := h.store.Count(session.StatePending); n != 3 {
		t.Errorf("%d pending, want 3: a refused request must not be stored", n)
	}
}

func TestCallbackRetriesThenDelivers(t *testing.T) {
	recv := &fakeReceiver{script: []DeliveryResult{
		{Err: errors.New("503"), Retryable: true},
		{Err: errors.New("timeout"), Retryable: true},
	}}
	h := startEngine(t, Config{CallbackSchedule: schedule.Doubling(time.Millisecond, 5*time.Millisecond)}, &fakeAuthz{}, recv)
	rec := h.mustAccept("callbackRetryToken000001")
	got := h.waitState(rec.ID, session.StateDelivered)
	if got.CallbackAttempts != 3 {
		t.Errorf("attempts %d, want 3", got.CallbackAttempts)
	}
	if cbs := recv.callbacks(rec.ID); len(cbs) != 3 {
		t.Errorf("callbacks %v, want 3 attempts", cbs)
	}
}

func TestCallbackFailsAfterMaxAttempts(t *testing.T) {
	fail := DeliveryResult{Err: errors.New("500"), Retryable: true}
	recv := &fakeReceiver{script: []DeliveryResult{fail, fail, fail, fail}}
	h := startEngine(t, Config{CallbackMaxAttempts: 3, CallbackSchedule: schedule.Doubling(time.Millisecond, 2*time.Millisecond)}, &fakeAuthz{}, recv)
	rec := h.mustAccept("callbackFailToken0000001")
	got := h.waitState(rec.ID, session.StateFailed)
	if got.CallbackAttempts != 3 || got.LastError != "500 (giving up: no attempts left after 3)" {
		t.Errorf("attempts %d last error %q, want 3 and 500, out of attempts", got.CallbackAttempts, got.LastError)
	}
	// An operator redelivers: it is delivered on the next attempt.
	if _, err := h.engine.Redeliver(rec.ID); err != nil {
		t.Fatal(err)
	}
	h.waitState(rec.ID, session.StateDelivered)
	if _, err := h.engine.Redeliver(rec.ID); !errors.Is(err, persistence.ErrWrongState) {
		t.Errorf("redeliver of a delivered request = %v, want ErrWrongState", err)
	}
}

func TestCallbackNotRetryableFailsAtOnce(t *testing.T) {
	recv := &fakeReceiver{script: []DeliveryResult{{Err: errors.New("forbidden destination"), Retryable: false}}}
	h := startEngine(t, Config{CallbackSchedule: schedule.Doubling(time.Millisecond, time.Millisecond)}, &fakeAuthz{}, recv)
	rec := h.mustAccept("callbackGoneToken0000001")
	if got := h.waitState(rec.ID, session.StateFailed); got.CallbackAttempts != 1 {
		t.Errorf("attempts %d, want 1", got.CallbackAttempts)
	}
}

// What the store holds when the engine starts is resumed: pending requests
// get a request actor (or unknown at once when their deadline passed, with
// no call), and decided ones get their callback.
func TestResume(t *testing.T) {
	fs := vfs.NewMem()
	st := openStore(t, fs)
	now := time.Now().UTC()
	put := func(id string, deadline time.Time) {
		t.Helper()
		rec := session.Record{ID: id, Request: session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: "resumeDriverToken0000001", CallbackURL: "http://x/"},
			AcceptedAt: deadline.Add(-time.Second), DecideBy: deadline, State: session.StatePending}
		if err := st.Accept(&rec); err != nil {
			t.Fatal(err)
		}
	}
	put("01900000-0000-7000-8000-000000000001", now.Add(-time.Minute)) // expired while down
	put("01900000-0000-7000-8000-000000000002", now.Add(time.Minute))
	put("01900000-0000-7000-8000-000000000003", now.Add(time.Minute))
	if _, err := st.Decide("01900000-0000-7000-8000-000000000003", session.StatusAllowed, "", session.ByAuthz, now); err != nil {
		t.Fatal(err)
	}
	authz := &fakeAuthz{answers: map[string]session.Status{"resumeDriverToken0000001": session.StatusNotAllowed}}
	h := startOn(t, Config{Store: st, MaxInflight: 1}, authz, &fakeReceiver{})

	if got := h.waitState("01900000-0000-7000-8000-000000000001", session.StateDelivered); got.Status != session.StatusUnknown {
		t.Errorf("expired request decided %s, want unknown", got.Status)
	}
	if got := h.waitState("01900000-0000-7000-8000-000000000002", session.StateDelivered); got.Status != session.StatusNotAllowed {
		t.Errorf("pending request decided %s, want not_allowed", got.Status)
	}
	if got := h.waitState("01900000-0000-7000-8000-000000000003", session.StateDelivered); got.Status != session.StatusAllowed {
		t.Errorf("decided request delivered as %s, want allowed", got.Status)
	}
	if calls, _ := authz.stats(); calls != 1 {
		t.Errorf("%d calls, want 1 (none for the expired request)", calls)
	}
	if n := h.recv.total(); n != 3 {
		t.Errorf("%d callbacks, want 3", n)
	}
}

func TestAcceptAfterStop(t *testing.T) {
	h := startEngine(t, Config{}, &fakeAuthz{}, &fakeReceiver{})
	h.engine.Stop(time.Second)
	_, err := h.engine.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000", DriverToken: "stoppedDriverToken000001", CallbackURL: "http://x/"})
	if !errors.Is(err, ErrStopping) {
		t.Fatalf("Accept after Stop = %v, want ErrStopping", err)
	}
}

// The answer and the deadline arriving at the same moment, many times over:
// every request is decided once, called back once, with the stored status.
func TestAnswerRacesDeadline(t *testing.T) {
	authz := &fakeAuthz{delay: 30 * time.Millisecond, hang: true,
		answers: map[string]session.Status{}}
	for i := range 100 {
		authz.answers[fmt.Sprintf("raceDriverToken%09d", i)] = session.StatusAllowed
	}
	h := startEngine(t, Config{DecisionTimeout: 30 * time.Millisecond, AuthzConcurrency: 100}, authz, &fakeReceiver{})
	var ids []string
	for i := range 100 {
		ids = append(ids, h.mustAccept(fmt.Sprintf("raceDriverToken%09d", i)).ID)
	}
	byAuthz := 0
	for _, id := range ids {
		rec := h.waitState(id, session.StateDelivered)
		if rec.DecidedBy == session.ByAuthz {
			byAuthz++
		}
		want := session.StatusUnknown
		if rec.DecidedBy == session.ByAuthz {
			want = session.StatusAllowed
		}
		if rec.Status != want {
			t.Errorf("%s: %s by %s", id, rec.Status, rec.DecidedBy)
		}
	}
	h.waitQuiet() // every late answer has arrived, and no actor is left to take one
	for _, id := range ids {
		rec, _ := h.store.Get(id)
		if cbs := h.recv.callbacks(id); len(cbs) != 1 || cbs[0] != rec.Status {
			t.Errorf("%s: callbacks %v, stored %s", id, cbs, rec.Status)
		}
	}
	t.Logf("%d of 100 decided by the answer, the rest by the deadline", byAuthz)
}

// The callback schedule lives in the store: a restart continues it from the
// stored attempt count, not from the first attempt.
func TestCallbackScheduleSurvivesRestart(t *testing.T) {
	fs := vfs.NewMem()
	st := openStore(t, fs)
	fail := DeliveryResult{Err: errors.New("503"), Retryable: true}
	recv := &fakeReceiver{script: []DeliveryResult{fail, fail, fail, fail, fail, fail}}
	cfg := Config{Store: st, CallbackMaxAttempts: 4, CallbackSchedule: schedule.Doubling(50*time.Millisecond, 50*time.Millisecond)}
	cfg.Authorize = (&fakeAuthz{}).authorize
	cfg.Deliver = recv.deliver
	cfg.Logger = testLogger(t)
	e, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000", DriverToken: "scheduleDriverToken00001", CallbackURL: "http://x/"})
	if err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		r, _ := st.Get(rec.ID)
		if r.CallbackAttempts < 2 {
			return fmt.Errorf("%d attempts", r.CallbackAttempts)
		}
		return nil
	})
	e.Stop(0)
	before, _ := st.Get(rec.ID)
	if before.State != session.StateDecided || before.NextAttemptAt.IsZero() {
		t.Fatalf("after stop: %+v", before)
	}

	// Restart: the remaining attempts (4 in all) are made, then failed.
	h := startOn(t, Config{Store: st, CallbackMaxAttempts: 4, CallbackSchedule: schedule.Doubling(50*time.Millisecond, 50*time.Millisecond)}, &fakeAuthz{}, recv)
	got := h.waitState(rec.ID, session.StateFailed)
	if got.CallbackAttempts != 4 {
		t.Errorf("%d attempts in all, want 4 (the count went on from %d)", got.CallbackAttempts, before.CallbackAttempts)
	}
	if n := len(recv.callbacks(rec.ID)); n != 4 {
		t.Errorf("%d callbacks sent in all, want 4", n)
	}
}

// While the authorization service is down, the breaker keeps calls from
// hammering it; once it is back, decisions flow again at once.
func TestBreakerBacksOffWhileDownAndRecovers(t *testing.T) {
	authz := &fakeAuthz{answers: map[string]session.Status{}}
	authz.down.Store(true)
	for i := range 40 {
		authz.answers[fmt.Sprintf("breakerDriverToken%06d", i)] = session.StatusAllowed
	}
	h := startEngine(t, Config{DecisionTimeout: 4 * time.Second}, authz, &fakeReceiver{})
	var ids []string
	for i := range 40 {
		ids = append(ids, h.mustAccept(fmt.Sprintf("breakerDriverToken%06d", i)).ID)
	}
	time.Sleep(time.Second) // the window is the point: calls in a second while down
	callsWhileDown, _ := authz.stats()
	// 40 requests retrying every <=500ms for a second would make well over
	// 80 calls; the breaker lets 5 through, then about one probe per 500ms.
	if callsWhileDown > 15 {
		t.Errorf("%d calls in a second while the service was down: want the breaker to hold them back", callsWhileDown)
	}
	up := time.Now()
	authz.down.Store(false)
	for _, id := range ids {
		rec := h.waitState(id, session.StateDelivered)
		if rec.Status != session.StatusAllowed {
			t.Errorf("%s decided %s by %s: the service was back well before its deadline", id, rec.Status, rec.DecidedBy)
		}
	}
	t.Logf("%d calls while down; all decided %v after the service came back", callsWhileDown, time.Since(up))
}

// Calls that begin close to their request's deadline (a backlog draining
// from disk after a burst) and run it out do not open the breaker: the
// fresh request behind them gets its call.
func TestShortCallsDoNotOpenTheBreaker(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	deadline := time.Now().UTC().Add(150 * time.Millisecond)
	var old []string
	for i := range 8 {
		rec := session.Record{ID: storedID(i), Request: session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: fmt.Sprintf("shortBudget%013d", i), CallbackURL: "http://x/"},
			AcceptedAt: deadline.Add(-4 * time.Second), DecideBy: deadline, State: session.StatePending}
		if err := st.Accept(&rec); err != nil {
			t.Fatal(err)
		}
		old = append(old, rec.ID)
	}
	var refused atomic.Int64
	observe := Observer{AuthzCall: func(result string, _ time.Duration) {
		if result == "breaker_open" {
			refused.Add(1)
		}
	}}
	// Every call takes 400 ms: the stored requests, 150 ms from their
	// deadline, all time out; a fresh one (4 s) is answered.
	authz := &fakeAuthz{delay: 400 * time.Millisecond, answers: map[string]session.Status{"freshAfterBacklog0000001": session.StatusAllowed}}
	h := startOn(t, Config{Store: st, DecisionTimeout: 4 * time.Second, AuthzBreakerFailures: 5, Observe: observe}, authz, &fakeReceiver{})
	for _, id := range old {
		if got := h.waitState(id, session.StateDelivered); got.Status != session.StatusUnknown {
			t.Errorf("%s decided %s, want unknown", id, got.Status)
		}
	}
	fresh := h.mustAccept("freshAfterBacklog0000001")
	if got := h.waitState(fresh.ID, session.StateDelivered); got.Status != session.StatusAllowed || got.DecidedBy != session.ByAuthz {
		t.Errorf("fresh request decided %s by %s, want allowed by the service", got.Status, got.DecidedBy)
	}
	if n := refused.Load(); n != 0 {
		t.Errorf("the breaker refused %d calls: eight short calls timing out opened it", n)
	}
	if state := h.engine.BreakerState(); state != 0 {
		t.Errorf("breaker state %d, want closed", state)
	}
}

// One very slow call does not hold up the calls queued behind it while
// other workers are free.
func TestNoHeadOfLineBlocking(t *testing.T) {
	authz := &fakeAuthz{slow: "verySlowDriverToken00001", slowFor: 2 * time.Second, delay: time.Millisecond}
	h := startEngine(t, Config{AuthzConcurrency: 2}, authz, &fakeReceiver{})
	h.mustAccept("verySlowDriverToken00001")
	var ids []string
	for i := range 100 {
		ids = append(ids, h.mustAccept(fmt.Sprintf("fastDriverToken%09d", i)).ID)
	}
	for _, id := range ids {
		h.waitState(id, session.StateDelivered)
	}
	if authz.slowEnd.Load() {
		t.Fatal("the fast requests were decided only after the slow call ended")
	}
}

// A burst of 5000 requests never puts more than AuthzConcurrency calls in
// flight at once, with the backlog on disk past MaxInflight.
func TestConcurrencyBoundUnderBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("5000 requests")
	}
	authz := &fakeAuthz{delay: 200 * time.Microsecond}
	h := startEngine(t, Config{AuthzConcurrency: 8, MaxInflight: 500, DecisionTimeout: time.Minute}, authz, &fakeReceiver{})
	var wg sync.WaitGroup
	ids := make([]string, 5000)
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				ids[g*100+i] = h.mustAccept(fmt.Sprintf("burstToken%04d%010d", g, i)).ID
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		h.waitState(id, session.StateDelivered)
	}
	calls, peak := authz.stats()
	if calls != 5000 || peak > 8 {
		t.Errorf("%d calls (want 5000), peak %d at once (want at most 8)", calls, peak)
	}
	t.Logf("peak %d calls at once", peak)
}

// A request whose deadline passes while it waits in the disk backlog is
// decided unknown without a call.
//
// The ten requests share one deadline, so that the first, which holds the
// one slot until its deadline, frees it only when the others' deadlines
// have passed too. (Accepted one after the other, each would have a few
// milliseconds more than the one before: a request admitted at the first
// one's deadline still had time left, and rightly got a call.)
func TestNoCallForExpiredBacklog(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	deadline := time.Now().UTC().Add(300 * time.Millisecond)
	var ids []string
	for i := range 10 {
		rec := session.Record{ID: storedID(i), Request: session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: fmt.Sprintf("backlogExpiry%011d", i), CallbackURL: "http://x/"},
			AcceptedAt: deadline.Add(-time.Second), DecideBy: deadline, State: session.StatePending}
		if err := st.Accept(&rec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	authz := &fakeAuthz{delay: 500 * time.Millisecond, hang: true}
	h := startOn(t, Config{Store: st, MaxInflight: 1}, authz, &fakeReceiver{})
	for _, id := range ids {
		if got := h.waitState(id, session.StateDelivered); got.Status != session.StatusUnknown {
			t.Errorf("%s decided %s, want unknown", id, got.Status)
		}
	}
	h.waitLateAnswers(1) // the one running call has ended
	h.waitQuiet()
	if calls, _ := authz.stats(); calls != 1 {
		t.Errorf("%d calls, want 1: the others expired in the backlog", calls)
	}
}

// Resuming a large backlog after a restart keeps the concurrency bound.
func TestConcurrencyBoundDuringResume(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	now := time.Now().UTC()
	for i := range 1000 {
		rec := session.Record{ID: fmt.Sprintf("01900000-0000-7000-8000-%012d", i),
			Request:    session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000", DriverToken: "resumeBoundToken00000001", CallbackURL: "http://x/"},
			AcceptedAt: now, DecideBy: now.Add(time.Minute), State: session.StatePending}
		if err := st.Accept(&rec); err != nil {
			t.Fatal(err)
		}
	}
	authz := &fakeAuthz{delay: 500 * time.Microsecond}
	h := startOn(t, Config{Store: st, AuthzConcurrency: 4, MaxInflight: 100}, authz, &fakeReceiver{})
	testwait.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := h.store.Count(session.StateDelivered); n != 1000 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
	if calls, peak := authz.stats(); calls != 1000 || peak > 4 {
		t.Errorf("%d calls (want 1000), peak %d (want at most 4)", calls, peak)
	}
}

// No retry is planned past the callback max age: the request fails.
func TestCallbackFailsAtMaxAge(t *testing.T) {
	fail := DeliveryResult{Err: errors.New("503"), Retryable: true}
	script := make([]DeliveryResult, 100)
	for i := range script {
		script[i] = fail
	}
	recv := &fakeReceiver{script: script}
	h := startEngine(t, Config{CallbackMaxAttempts: 100, CallbackSchedule: schedule.Doubling(20*time.Millisecond, 20*time.Millisecond), CallbackMaxAge: 100 * time.Millisecond}, &fakeAuthz{}, recv)
	rec := h.mustAccept("maxAgeDriverToken0000001")
	got := h.waitState(rec.ID, session.StateFailed)
	if got.CallbackAttempts >= 100 || !strings.Contains(got.LastError, "max age") {
		t.Errorf("attempts %d, last error %q: want failed by max age", got.CallbackAttempts, got.LastError)
	}
}

// Callbacks slower than decisions wait in the store, not in memory: the
// sender never holds more than CallbackQueueLimit, and every one is
// delivered in the end, also those decided before a restart.
func TestCallbackBacklogWaitsOnDisk(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	now := time.Now().UTC()
	for i := range 50 { // decided before the start: resumed from the store
		storeDecided(t, st, i, now)
	}
	slow := &slowReceiver{delay: 2 * time.Millisecond}
	cfg := Config{Store: st, CallbackQueueLimit: 5, CallbackConcurrency: 2}
	cfg.Authorize = (&fakeAuthz{}).authorize
	cfg.Deliver = slow.deliver
	cfg.Logger = testLogger(t)
	e, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(0) })
	peak := samplePeak(t, e.CallbacksPending)
	for i := range 100 {
		if _, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: fmt.Sprintf("cbBacklogToken%010d", i), CallbackURL: "http://x/"}); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := st.Count(session.StateDelivered); n != 150 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
	if p := peak.Load(); p > 5 {
		t.Errorf("the sender held %d callbacks at once, want at most 5", p)
	}
	if n := slow.count.Load(); n != 150 {
		t.Errorf("%d deliveries, want exactly 150 (no duplicates)", n)
	}
}

// Callbacks waiting in the store go out earliest due first, not in id
// order: here the newest request was decided first.
func TestCallbackBacklogEarliestDueFirst(t *testing.T) {
	const n = 20
	st := openStore(t, vfs.NewMem())
	now := time.Now().UTC()
	var want []string
	for i := range n {
		rec := storeDecided(t, st, i, now.Add(-time.Duration(i)*time.Second))
		want = append([]string{rec.ID}, want...)
	}
	var (
		mu  sync.Mutex
		got []string
	)
	cfg := Config{Store: st, CallbackQueueLimit: 1, CallbackConcurrency: 1}
	cfg.Deliver = func(_ time.Time, id string, _ session.Request, _ session.Status) DeliveryResult {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, id)
		return DeliveryResult{StatusCode: 204}
	}
	startOn(t, cfg, &fakeAuthz{}, &fakeReceiver{})
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if d := st.Count(session.StateDelivered); d != n {
			return fmt.Errorf("%d of %d delivered", d, n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delivered in this order:\n%v\nwant the earliest due first:\n%v", got, want)
	}
}

// storedID is the id storeDecided gives its i-th request.
func storedID(i int) string { return fmt.Sprintf("01900000-0000-7000-8000-%012d", i) }

// storeDecided writes the i-th request, accepted and decided allowed at
// at, straight into the store (the engine is not told).
func storeDecided(t *testing.T, st *persistence.Store, i int, at time.Time) session.Record {
	t.Helper()
	id := storedID(i)
	rec := session.Record{ID: id, Request: session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
		DriverToken: "cbBacklogToken0000000001", CallbackURL: "http://x/"},
		AcceptedAt: at, DecideBy: at.Add(time.Minute), State: session.StatePending}
	if err := st.Accept(&rec); err != nil {
		t.Fatal(err)
	}
	dec, err := st.Decide(id, session.StatusAllowed, "", session.ByAuthz, at)
	if err != nil {
		t.Fatal(err)
	}
	return dec
}

type slowReceiver struct {
	delay time.Duration
	count atomic.Int64
}

func (s *slowReceiver) deliver(time.Time, string, session.Request, session.Status) DeliveryResult {
	time.Sleep(s.delay) // slow on purpose
	s.count.Add(1)
	return DeliveryResult{StatusCode: 204}
}

// One slow receiver host cannot take every delivery slot: a fast host's
// callbacks go out while the slow host's are still being sent.
func TestCallbackHostFairness(t *testing.T) {
	var slowDone, fastDone atomic.Int64
	deliver := func(_ time.Time, _ string, req session.Request, _ session.Status) DeliveryResult {
		if strings.Contains(req.CallbackURL, "slow.example") {
			time.Sleep(300 * time.Millisecond) // the slow host, slow on purpose
			slowDone.Add(1)
		} else {
			fastDone.Add(1)
		}
		return DeliveryResult{StatusCode: 204}
	}
	st := openStore(t, vfs.NewMem())
	cfg := Config{Store: st, CallbackConcurrency: 4, CallbackHostConcurrency: 2, Deliver: deliver,
		Authorize: (&fakeAuthz{}).authorize, Logger: testLogger(t)}
	e, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(0) })
	accept := func(url string, i int) {
		t.Helper()
		if _, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: fmt.Sprintf("fairnessDriverToken%05d", i), CallbackURL: url}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 { // the slow host's callbacks come first
		accept("http://slow.example/cb", i)
	}
	for i := range 20 {
		accept("http://fast.example/cb", 100+i)
	}
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := fastDone.Load(); n != 20 {
			return fmt.Errorf("%d fast callbacks delivered", n)
		}
		return nil
	})
	// With one FIFO and 4 slots, the 20 slow callbacks (300ms each) would
	// go first: 1.5s before any fast one. With 2 slots per host, the fast
	// host is done while most slow ones still wait.
	if n := slowDone.Load(); n > 10 {
		t.Errorf("%d slow callbacks were delivered before the fast host's 20: the slow host took the slots", n)
	}
}

// Callbacks parked for a failing receiver do not hold back a healthy one,
// even when they fill most of the sender's memory limit.
func TestOverflowDoesNotStallHealthyReceivers(t *testing.T) {
	var healthy, dead atomic.Int64
	deliver := func(_ time.Time, _ string, req session.Request, _ session.Status) DeliveryResult {
		if strings.Contains(req.CallbackURL, "dead.example") {
			dead.Add(1)
			return DeliveryResult{StatusCode: 503, Err: errors.New("503"), Retryable: true, RetryAfter: time.Minute}
		}
		healthy.Add(1)
		return DeliveryResult{StatusCode: 204}
	}
	st := openStore(t, vfs.NewMem())
	e, err := Start(Config{Store: st, CallbackQueueLimit: 10,
		Deliver: deliver, Authorize: (&fakeAuthz{}).authorize, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(0) })
	accept := func(url string, i int) {
		t.Helper()
		if _, err := e.Accept(session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: fmt.Sprintf("overflowDriverToken%05d", i), CallbackURL: url}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 { // more than the limit: some wait on disk
		accept("http://dead.example/cb", i)
	}
	// Every dead callback has failed once and waits for its retry.
	testwait.Eventually(t, 5*time.Second, time.Millisecond, func() error {
		if n := dead.Load(); n < 12 {
			return fmt.Errorf("%d of 12 dead callbacks attempted", n)
		}
		return nil
	})
	for i := range 5 {
		accept("http://ok.example/cb", 100+i)
	}
	testwait.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := healthy.Load(); n != 5 {
			return fmt.Errorf("%d of 5 healthy callbacks delivered", n)
		}
		return nil
	})
}

// An *Accepted that reaches the supervisor after a backlog scan already
// admitted, decided and delivered its request (it was still in the mailbox)
// starts an actor that finds the decision in the store: no second call to
// the authorization service, no second callback.
func TestLateAcceptedAfterScanChangesNothing(t *testing.T) {
	authz := &fakeAuthz{delay: time.Millisecond}
	h := startEngine(t, Config{MaxInflight: 1}, authz, &fakeReceiver{})
	first := h.mustAccept("lateAcceptedToken000001")
	second := h.mustAccept("lateAcceptedToken000002") // waits in the backlog; a scan admits it
	h.waitState(first.ID, session.StateDelivered)
	h.waitState(second.ID, session.StateDelivered)

	h.engine.system.Root.Send(h.engine.supervisor, &Accepted{Record: second})
	// The supervisor's mailbox is FIFO: once it answers a resume, it has
	// taken the late Accepted; once no actor lives, its actor is done.
	if _, err := h.engine.system.Root.RequestFuture(h.engine.supervisor, &resume{}, 5*time.Second).Result(); err != nil {
		t.Fatal(err)
	}
	h.waitQuiet()
	if calls, _ := authz.stats(); calls != 2 {
		t.Errorf("%d calls to the authorization service, want 2", calls)
	}
	if cbs := h.recv.callbacks(second.ID); len(cbs) != 1 {
		t.Errorf("callbacks %v: want exactly one", cbs)
	}
}

// checkedReceiver fails every attempt while down is set (with retryAfter,
// if any, as the receiver's Retry-After). At each attempt it checks against
// the store that the record's NextAttemptAt has come, that no other attempt
// of the id is in flight, and that the id was not delivered already.
type checkedReceiver struct {
	store      *persistence.Store
	down       atomic.Bool
	retryAfter time.Duration

	mu        sync.Mutex
	inFlight  map[string]bool
	attempts  map[string]int
	delivered map[string]int
	failures  int
	late      time.Duration // the most an attempt came after its NextAttemptAt
	problems  []string
}

func newCheckedReceiver(st *persistence.Store) *checkedReceiver {
	return &checkedReceiver{store: st, inFlight: make(map[string]bool), attempts: make(map[string]int),
		delivered: make(map[string]int)}
}

func (r *checkedReceiver) deliver(_ time.Time, id string, _ session.Request, _ session.Status) DeliveryResult {
	down := r.down.Load() // before the attempt counts: see minAttempts
	now := time.Now()
	rec, err := r.store.Get(id)
	r.mu.Lock()
	switch {
	case err != nil:
		r.problems = append(r.problems, fmt.Sprintf("%s: %v", id, err))
	case now.Before(rec.NextAttemptAt):
		r.problems = append(r.problems, fmt.Sprintf("%s: attempt %d made %v before its NextAttemptAt",
			id, r.attempts[id]+1, rec.NextAttemptAt.Sub(now)))
	case !rec.NextAttemptAt.IsZero():
		r.late = max(r.late, now.Sub(rec.NextAttemptAt))
	}
	if r.inFlight[id] {
		r.problems = append(r.problems, id+": two attempts at once")
	}
	if r.delivered[id] > 0 {
		r.problems = append(r.problems, id+": attempted after its delivery")
	}
	r.inFlight[id] = true
	r.attempts[id]++
	r.mu.Unlock()

	time.Sleep(50 * time.Microsecond) // on purpose: a window for an overlapping attempt to show

	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inFlight, id)
	if down {
		r.failures++
		return DeliveryResult{StatusCode: 503, Err: errors.New("503"), Retryable: true, RetryAfter: r.retryAfter}
	}
	r.delivered[id]++
	return DeliveryResult{StatusCode: 204}
}

// minAttempts is the fewest attempts any of ids had. An attempt counts once
// it has read down: after down is set, the attempts counted so far all fail.
func (r *checkedReceiver) minAttempts(ids []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	least := -1
	for _, id := range ids {
		if n := r.attempts[id]; least < 0 || n < least {
			least = n
		}
	}
	return least
}

// checkDeliveredOnce fails t for every problem the receiver saw, and for
// each of ids not delivered exactly once.
func (r *checkedReceiver) checkDeliveredOnce(t *testing.T, ids []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Error(p)
	}
	for _, id := range ids {
		if d := r.delivered[id]; d != 1 {
			t.Errorf("%s delivered %d times, want 1", id, d)
		}
	}
}

// samplePeak records the highest value of f (a gauge of the engine),
// sampled every 100µs until the test ends.
func samplePeak(t *testing.T, f func() int64) *atomic.Int64 {
	t.Helper()
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := f(); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(100 * time.Microsecond) // the sampling period
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return &peak
}

// While a receiver fails every attempt through a burst, the callbacks it
// owes wait for their retries in the store, not in memory: the sender
// holds at most CallbackQueueLimit. Once the receiver recovers, every
// callback is delivered, exactly once, and no attempt is ever made before
// the NextAttemptAt its record holds.
func TestRetriesWaitingInMemoryAreBounded(t *testing.T) {
	const limit, n = 5, 200
	st := openStore(t, vfs.NewMem())
	recv := newCheckedReceiver(st)
	recv.down.Store(true)
	h := startOn(t, Config{Store: st, CallbackQueueLimit: limit, CallbackMaxAttempts: 1000,
		CallbackSchedule: schedule.Doubling(2*time.Millisecond, 20*time.Millisecond), Deliver: recv.deliver},
		&fakeAuthz{}, &fakeReceiver{})
	peak := samplePeak(t, h.engine.CallbacksPending)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.mustAccept(fmt.Sprintf("retryBoundToken%09d", i)).ID
	}
	// Every callback is retried at least twice while the receiver is down:
	// the retries went to the store and came back.
	testwait.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
		if p := peak.Load(); p > limit {
			t.Fatalf("the sender held %d callbacks at once while the receiver was down, want at most %d", p, limit)
		}
		if least := recv.minAttempts(ids); least < 3 {
			return fmt.Errorf("a callback was attempted only %d times", least)
		}
		return nil
	})
	recv.down.Store(false)
	testwait.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
		if d := st.Count(session.StateDelivered); d != n {
			return fmt.Errorf("%d of %d delivered", d, n)
		}
		return nil
	})
	if p := peak.Load(); p > limit {
		t.Errorf("the sender held %d callbacks at once, want at most %d", p, limit)
	}
	recv.checkDeliveredOnce(t, ids)
	recv.mu.Lock()
	defer recv.mu.Unlock()
	// A refill takes only what is due: an attempt that finds nothing to
	// send comes only from a decision's DeliverCallback that arrived after
	// a refill took its record, at most one per request.
	idle := h.engine.idleAttempts.Load()
	if idle > n {
		t.Errorf("%d attempts found nothing to send, for %d requests: records were taken before they were due", idle, n)
	}
	t.Logf("peak %d held, %d failed attempts, %d idle, latest retry %v after its time",
		peak.Load(), recv.failures, idle, recv.late)
}

// A retry waiting in the store comes back when it is due: not before its
// NextAttemptAt, and soon after it.
func TestRetryWaitingInTheStoreComesBackWhenDue(t *testing.T) {
	const limit, n = 2, 6
	st := openStore(t, vfs.NewMem())
	recv := newCheckedReceiver(st)
	recv.retryAfter = 300 * time.Millisecond
	recv.down.Store(true)
	// A delay of 1ns: the delay is the receiver's Retry-After.
	h := startOn(t, Config{Store: st, CallbackQueueLimit: limit, CallbackSchedule: schedule.Delays{0, time.Nanosecond}, Deliver: recv.deliver}, &fakeAuthz{}, &fakeReceiver{})
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.mustAccept(fmt.Sprintf("releasedRetryToken%06d", i)).ID
	}
	testwait.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if least := recv.minAttempts(ids); least < 1 {
			return errors.New("not every callback was attempted yet")
		}
		return nil
	})
	recv.down.Store(false)
	for _, id := range ids {
		h.waitState(id, session.StateDelivered)
	}
	recv.checkDeliveredOnce(t, ids)
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for _, id := range ids {
		if a := recv.attempts[id]; a != 2 {
			t.Errorf("%s: %d attempts, want 2", id, a)
		}
	}
	if recv.late > 250*time.Millisecond {
		t.Errorf("a retry came %v after its NextAttemptAt, want within 250ms", recv.late)
	}
	t.Logf("latest retry %v after its NextAttemptAt", recv.late)
}
