package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/sony/gobreaker/v2"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// AuthorizeFunc calls the authorization service once. It must return by the
// deadline. err != nil means "no answer" (the call may be retried).
type AuthorizeFunc func(deadline time.Time, stationID, driverToken string) (session.Status, string, error)

// DeliverFunc POSTs one callback attempt and must return by the deadline.
type DeliverFunc func(deadline time.Time, id string, req session.Request, status session.Status) DeliveryResult

// DeliveryResult is the outcome of one callback attempt.
type DeliveryResult struct {
	StatusCode int           // the receiver's HTTP status; 0 if none arrived
	Err        error         // nil: delivered (any 2xx)
	Retryable  bool          // false: give up now (e.g. a forbidden destination)
	RetryAfter time.Duration // the receiver's Retry-After, if any
	Response   string        // the start of the receiver's body (session.MaxResponseLog bytes at most)
}

// ErrStopping is returned by Accept once Stop has begun.
var ErrStopping = errors.New("actors: stopping")

// ErrBacklogFull is returned by Accept when MaxBacklog requests already wait.
var ErrBacklogFull = errors.New("actors: backlog full")

// Config configures an Engine.
type Config struct {
	// Store holds every request. Required.
	Store *persistence.Store
	// Authorize calls the authorization service. Required.
	Authorize AuthorizeFunc
	// Deliver POSTs a callback. Required.
	Deliver DeliverFunc
	// Logger receives the engine's and protoactor's logs.
	// Default: slog.Default().
	Logger *slog.Logger

	// DecisionTimeout is the time from accept to the deadline, after which
	// the decision is unknown. Default: 10s.
	DecisionTimeout time.Duration
	// AuthzConcurrency bounds the calls to the authorization service in
	// flight at once. Default: 64.
	AuthzConcurrency int
	// AuthzRetryBackoff is the first delay before a failed call is retried
	// (doubling, jittered by up to 20%, capped at AuthzBreakerCooldown:
	// schedule.Doubling). Default: 50ms.
	AuthzRetryBackoff time.Duration
	// AuthzBreakerFailures consecutive failed calls open the circuit
	// breaker: calls then fail at once, without reaching the authorization
	// service, until one probe after AuthzBreakerCooldown succeeds.
	// Default: 5.
	AuthzBreakerFailures int
	// AuthzBreakerCooldown is how long the breaker stays open before it
	// lets one probe call through. Default: 500ms.
	AuthzBreakerCooldown time.Duration

	// MaxInflight bounds the live request actors. Default: 10000.
	MaxInflight int
	// MaxBacklog bounds the accepted requests that wait for a request actor;
	// Accept returns ErrBacklogFull beyond it. Default: 0 (bounded by disk).
	MaxBacklog int

	// CallbackSchedule is the delays between callback attempts, the
	// first (0) before the first attempt; each is jittered by up to 20%,
	// and a receiver's Retry-After lengthens it (see package schedule).
	// Default: schedule.Default (0s,5s,5m,30m,2h,5h,10h,14h,20h,24h).
	CallbackSchedule schedule.Delays
	// CallbackMaxAttempts caps the attempts, the first included: fewer
	// than the schedule's entries cut it short, more repeat its last
	// delay. Default: 0, the schedule's length.
	CallbackMaxAttempts int
	// CallbackMaxAge: no attempt is planned later than this after the
	// decision (or the last redelivery): the last one is at the max age,
	// then the request is failed. Default: 72h.
	CallbackMaxAge time.Duration
	// CallbackTimeout bounds one attempt. Default: 10s.
	CallbackTimeout time.Duration
	// CallbackConcurrency bounds the attempts in flight. Default: 256.
	CallbackConcurrency int
	// CallbackHostConcurrency bounds the attempts in flight to one
	// receiver host, so a slow receiver cannot starve the others.
	// Default: 64 (most fleets call back one host, their own backend:
	// 16 capped them at 16 / the attempt's latency).
	CallbackHostConcurrency int
	// CallbackQueueLimit bounds the callbacks held in memory (due, queued
	// or in flight); the rest, and every callback waiting for a retry,
	// wait in the store and are read back when due. Default: 10000.
	CallbackQueueLimit int

	// Observe receives the engine's measurements (metrics). Default: none.
	Observe Observer

	// Node is this node's number, carried by every request id (NewID).
	// Default: 0.
	Node uint16

	now func() time.Time // test-only clock
	// yieldTicks, if set, drives the yield controller instead of a ticker
	// of yieldTick; yieldStepped, if set, gets each limit it sets
	// (test-only).
	yieldTicks   <-chan time.Time
	yieldStepped chan bool
	// yieldPaused, with yieldTicks, gets true when the controller falls
	// asleep (it stops taking ticks) and false when an accept wakes it
	// (test-only).
	yieldPaused chan bool
	// yieldAccepting, if set, replaces the count of accepts in flight the
	// controller reads (test-only: a test's accepts run one by one).
	yieldAccepting func() int64
}

// Observer receives measurements as they happen. Its funcs must be fast and
// safe for concurrent use; nil funcs are skipped.
type Observer struct {
	// AuthzCall: one call to the authorization service; result is
	// "answered", "error" or "breaker_open".
	AuthzCall func(result string, took time.Duration)
	// Decided: a decision is durable; took is from accept to decision.
	Decided func(status session.Status, by session.DecidedBy, took time.Duration)
	// CallbackAttempt: one callback attempt; result is "delivered",
	// "retry" or "failed".
	CallbackAttempt func(result string, took time.Duration)
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DecisionTimeout == 0 {
		c.DecisionTimeout = 10 * time.Second
	}
	if c.AuthzConcurrency == 0 {
		c.AuthzConcurrency = 64
	}
	if c.AuthzRetryBackoff == 0 {
		c.AuthzRetryBackoff = 50 * time.Millisecond
	}
	if c.AuthzBreakerFailures == 0 {
		c.AuthzBreakerFailures = 5
	}
	if c.AuthzBreakerCooldown == 0 {
		c.AuthzBreakerCooldown = 500 * time.Millisecond
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 10000
	}
	if c.CallbackSchedule == nil {
		c.CallbackSchedule = schedule.Default
	}
	if c.CallbackMaxAge == 0 {
		c.CallbackMaxAge = 72 * time.Hour
	}
	if c.CallbackTimeout == 0 {
		c.CallbackTimeout = 10 * time.Second
	}
	if c.CallbackConcurrency == 0 {
		c.CallbackConcurrency = 256
	}
	if c.CallbackHostConcurrency == 0 {
		c.CallbackHostConcurrency = 64
	}
	if c.CallbackQueueLimit == 0 {
		c.CallbackQueueLimit = 10000
	}
	if c.now == nil {
		c.now = time.Now
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("actors: Store is required")
	case c.Authorize == nil:
		return errors.New("actors: Authorize is required")
	case c.Deliver == nil:
		return errors.New("actors: Deliver is required")
	case c.DecisionTimeout < time.Millisecond:
		return fmt.Errorf("actors: decision timeout %v: must be at least 1ms", c.DecisionTimeout)
	case c.AuthzConcurrency < 1:
		return fmt.Errorf("actors: authz concurrency %d: must be at least 1", c.AuthzConcurrency)
	case c.AuthzRetryBackoff < 0:
		return fmt.Errorf("actors: authz retry backoff %v: must not be negative", c.AuthzRetryBackoff)
	case c.AuthzBreakerFailures < 1:
		return fmt.Errorf("actors: authz breaker failures %d: must be at least 1", c.AuthzBreakerFailures)
	case c.AuthzBreakerCooldown < time.Millisecond:
		return fmt.Errorf("actors: authz breaker cooldown %v: must be at least 1ms", c.AuthzBreakerCooldown)
	case c.Node > MaxNode:
		return fmt.Errorf("actors: node number %d: more than %d", c.Node, MaxNode)
	case c.MaxInflight < 1:
		return fmt.Errorf("actors: max inflight %d: must be at least 1", c.MaxInflight)
	case c.MaxBacklog < 0:
		return fmt.Errorf("actors: max backlog %d: must not be negative", c.MaxBacklog)
	case c.CallbackMaxAttempts < 0:
		return fmt.Errorf("actors: callback max attempts %d: must not be negative", c.CallbackMaxAttempts)
	case c.CallbackMaxAge < time.Millisecond:
		return fmt.Errorf("actors: callback max age %v: must be at least 1ms", c.CallbackMaxAge)
	case c.CallbackTimeout < time.Millisecond:
		return fmt.Errorf("actors: callback timeout %v: must be at least 1ms", c.CallbackTimeout)
	case c.CallbackConcurrency < 1:
		return fmt.Errorf("actors: callback concurrency %d: must be at least 1", c.CallbackConcurrency)
	case c.CallbackHostConcurrency < 1:
		return fmt.Errorf("actors: callback host concurrency %d: must be at least 1", c.CallbackHostConcurrency)
	case c.CallbackQueueLimit < 1:
		return fmt.Errorf("actors: callback queue limit %d: must be at least 1", c.CallbackQueueLimit)
	}
	if err := c.CallbackSchedule.Validate(); err != nil {
		return fmt.Errorf("actors: callback %w", err)
	}
	return nil
}

// Engine is the running pipeline.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	system *actor.ActorSystem

	breaker *gobreaker.CircuitBreaker[authzResult]
	// authzRetries are the delays between a request's calls to the
	// authorization service, capped at the breaker's cooldown: once the
	// service is back, waiting requests try again within about that long.
	authzRetries schedule.Delays

	supervisor *actor.PID
	pool       *actor.PID
	sender     *actor.PID

	live         atomic.Int64 // live request actors
	authzCalls   atomic.Int64 // calls in flight to the authorization service
	pendingCB    atomic.Int64 // callbacks queued or in flight (held in memory)
	idleAttempts atomic.Int64 // attempts that found nothing to send (a late DeliverCallback): tests

	callbacksBusy atomic.Int64 // callback attempts in flight

	// The yield controller (yield.go) reads the accepts and paces the
	// supervisor's admissions while the front is hot.
	acceptedTotal atomic.Int64 // new requests accepted
	accepting     atomic.Int64 // accepts in flight (the yield controller's gauge of a busy front)
	decidedTotal  atomic.Int64 // request actors done deciding (tests)
	paced         atomic.Bool
	admissions    atomic.Int64 // left in this tick, while paced
	yieldStop     chan struct{}
	yieldDone     chan struct{}
	yieldWake     chan struct{} // capacity 1: an accept wakes the sleeping controller
	yieldAsleep   atomic.Bool

	// calls feeds the authz pool's worker goroutines; closed by Stop once
	// the pool, its only writer, has stopped.
	calls chan waitingCall
	// authzWorkers starts the workers once; authzBusy counts the calls
	// handed to them and not yet reported idle. Only the pool touches it
	// (it outlives a restart of the pool's actor).
	authzWorkers sync.Once
	authzBusy    int
	// attemptWorkers counts the attempt goroutines started; only the
	// callback sender touches it.
	attemptWorkers int
	// attempts feeds the callback attempt goroutines (see
	// callbackSender.submit); closed by Stop once the sender has stopped.
	attempts chan func()

	mu struct {
		sync.RWMutex
		stopping bool
	}
	accepts sync.WaitGroup // Accept calls in progress
	// dispatch runs the mailboxes of every actor of the engine.
	dispatch *reuseDispatcher
}

// Start builds the actor system, resumes what the store holds (pending
// requests get a request actor again or unknown at once; decided requests
// get their callback scheduled again) and returns once that is done.
func Start(cfg Config) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, log: cfg.Logger,
		authzRetries: schedule.Doubling(cfg.AuthzRetryBackoff, max(cfg.AuthzBreakerCooldown, cfg.AuthzRetryBackoff))}
	e.breaker = gobreaker.NewCircuitBreaker[authzResult](gobreaker.Settings{
		Name:        "authz",
		MaxRequests: 1,
		Timeout:     cfg.AuthzBreakerCooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(cfg.AuthzBreakerFailures) },
		IsExcluded:  excludedFromBreaker,
		OnStateChange: func(_ string, from, to gobreaker.State) {
			e.log.Warn("authorization service circuit breaker", "from", from.String(), "to", to.String())
		},
	})
	protoLog := slog.New(minLevel(cfg.Logger.Handler(), slog.LevelWarn)).With("component", "protoactor")
	e.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return protoLog }))
	e.dispatch = newReuseDispatcher()
	root := e.system.Root

	e.attempts = make(chan func(), cfg.CallbackConcurrency)
	e.calls = make(chan waitingCall, cfg.AuthzConcurrency)
	var err error
	if e.sender, err = root.SpawnNamed(e.props(func() actor.Actor { return newCallbackSender(e) }), "callbacks"); err != nil {
		return nil, fmt.Errorf("actors: spawn callback sender: %w", err)
	}
	if e.pool, err = root.SpawnNamed(e.props(func() actor.Actor { return newAuthzPool(e) }), "authz"); err != nil {
		return nil, fmt.Errorf("actors: spawn authz pool: %w", err)
	}
	if e.supervisor, err = root.SpawnNamed(e.props(func() actor.Actor { return newSupervisor(e) }), "requests"); err != nil {
		return nil, fmt.Errorf("actors: spawn supervisor: %w", err)
	}
	e.watchDeadLetters()
	e.yieldStop, e.yieldDone, e.yieldWake = make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
	go func() {
		defer close(e.yieldDone)
		// A test that drives the ticks without watching the sleeps gets a
		// controller that never sleeps (pause nil): its ticks never block.
		var pause, resume func()
		ticks := cfg.yieldTicks
		if cfg.yieldPaused != nil {
			pause, resume = func() { cfg.yieldPaused <- true }, func() { cfg.yieldPaused <- false }
		}
		if ticks == nil {
			t := time.NewTicker(yieldTick)
			defer t.Stop()
			ticks, pause, resume = t.C, t.Stop, func() { t.Reset(yieldTick) }
		}
		e.runYield(ticks, e.yieldStop, pause, resume)
	}()

	// Undelivered callbacks first: they are already decided.
	scheduled, err := e.rescanCallbacks()
	if err != nil {
		e.Stop(0)
		return nil, fmt.Errorf("actors: resume callbacks: %w", err)
	}
	res, err := root.RequestFuture(e.supervisor, &resume{}, time.Minute).Result()
	if err == nil {
		if r, ok := res.(*resumed); ok {
			err = r.err
		}
	}
	if err != nil {
		e.Stop(0)
		return nil, fmt.Errorf("actors: resume requests: %w", err)
	}
	e.log.Info("resumed", "pending", cfg.Store.Count(session.StatePending), "callbacks", scheduled)

	// After a failed write the store reopens Pebble; decisions and attempts
	// that failed meanwhile are still in their earlier state: pick them up.
	cfg.Store.OnRecover(func() {
		if e.stopping() {
			return
		}
		n, err := e.rescanCallbacks()
		if err != nil {
			e.log.Error("rescan of callbacks after store recovery", "err", err)
		}
		e.system.Root.Send(e.supervisor, &resume{})
		e.log.Info("resumed after store recovery", "pending", cfg.Store.Count(session.StatePending), "callbacks", n)
	})
	return e, nil
}

// rescanCallbacks has the callback sender read the decided (undelivered)
// requests back from the store's due index: it takes those due, passes
// over those it is delivering already, and arms its wake for the rest.
func (e *Engine) rescanCallbacks() (int64, error) {
	e.system.Root.Send(e.sender, &rescanCallbacks{})
	return e.cfg.Store.Count(session.StateDecided), nil
}

// System is the engine's actor system (tests subscribe to its EventStream).
func (e *Engine) System() *actor.ActorSystem { return e.system }

// Accept gives the request an id and a deadline, stores it durably
// (pebble.Sync, from the caller's goroutine, so concurrent accepts share one
// fsync) and only then hands it to the supervisor. The returned record is
// durable when err is nil.
func (e *Engine) Accept(req session.Request) (session.Record, error) {
	return e.accept(req, func(rec *session.Record) (bool, error) {
		return true, e.cfg.Store.Accept(rec)
	})
}

// accept is Accept with the store write as write: it returns whether rec,
// possibly replaced by write, is a new request for the supervisor.
func (e *Engine) accept(req session.Request, write func(*session.Record) (bool, error)) (session.Record, error) {
	e.mu.RLock()
	if e.mu.stopping {
		e.mu.RUnlock()
		return session.Record{}, ErrStopping
	}
	e.accepts.Add(1)
	e.mu.RUnlock()
	defer e.accepts.Done()
	e.accepting.Add(1)
	defer e.accepting.Add(-1)

	if max := e.cfg.MaxBacklog; max > 0 && e.Backlog() >= int64(max) {
		return session.Record{}, ErrBacklogFull
	}
	id, err := NewID(e.cfg.Node)
	if err != nil {
		return session.Record{}, err
	}
	now := e.cfg.now().UTC()
	rec := session.Record{
		ID:         id,
		Request:    req,
		AcceptedAt: now,
		DecideBy:   now.Add(e.cfg.DecisionTimeout),
		State:      session.StatePending,
	}
	isNew, err := write(&rec)
	if err != nil && isNew {
		return session.Record{}, err
	}
	if err != nil {
		return rec, err // an earlier request write put in rec
	}
	if isNew {
		e.acceptedTotal.Add(1)
		e.wakeYield()
		e.system.Root.Send(e.supervisor, &Accepted{Record: rec})
	}
	return rec, nil
}

// Backlog is the number of accepted requests waiting for a request actor.
func (e *Engine) Backlog() int64 {
	n := e.cfg.Store.Count(session.StatePending) - e.live.Load()
	if n < 0 {
		return 0
	}
	return n
}

// LiveRequests is the number of live request actors.
func (e *Engine) LiveRequests() int64 { return e.live.Load() }

// BreakerState is the authorization service circuit breaker's state:
// 0 closed, 1 half-open, 2 open (gobreaker's State values).
func (e *Engine) BreakerState() int64 { return int64(e.breaker.State()) }

// AuthzCallsInFlight is the number of calls to the authorization service now.
func (e *Engine) AuthzCallsInFlight() int64 { return e.authzCalls.Load() }

// CallbacksPending is the number of callbacks held in memory: queued or in
// flight (at most CallbackQueueLimit). Callbacks waiting in the store, for
// room or for a retry, are not counted.
func (e *Engine) CallbacksPending() int64 { return e.pendingCB.Load() }

// Stop refuses new requests, lets live requests and callbacks finish for up
// to grace, then stops the actors. What did not finish stays in the store
// and resumes on the next Start. The caller closes the store afterwards.
func (e *Engine) Stop(grace time.Duration) {
	e.mu.Lock()
	already := e.mu.stopping
	e.mu.stopping = true
	e.mu.Unlock()
	if already {
		return
	}
	deadline := time.Now().Add(grace)
	// The pipeline has the CPU to itself now: the yield controller stops
	// (first, so that it sends the supervisor nothing after it stopped),
	// and the pipeline runs at full speed through the grace.
	if e.yieldStop != nil {
		close(e.yieldStop)
		<-e.yieldDone
		if e.paced.Swap(false) {
			e.system.Root.Send(e.supervisor, &paceTick{})
		}
	}
	// Accepts in progress finish (their 202 or 503 is owed), but within the
	// grace: a write stalled in Pebble must not hold SIGTERM forever.
	acceptsDone := make(chan struct{})
	go func() { e.accepts.Wait(); close(acceptsDone) }()
	graceEnd := time.NewTimer(grace)
	defer graceEnd.Stop()
	select {
	case <-acceptsDone:
	case <-graceEnd.C:
		e.log.Warn("accepts still in progress at the end of the grace")
	}
	for time.Now().Before(deadline) && (e.live.Load() > 0 || e.callbacksBusy.Load() > 0) {
		time.Sleep(10 * time.Millisecond)
	}
	root := e.system.Root
	// The supervisor's request actors stop at once (what is undecided stays
	// pending in the store).
	senderStopped := true
	for _, pid := range []*actor.PID{e.supervisor, e.sender} {
		if pid != nil {
			if err := root.StopFuture(pid).Wait(); err != nil && pid == e.sender {
				senderStopped = false
			}
		}
	}
	// A channel is closed only once its one writer has surely stopped (a
	// stop can time out, with the writer stuck on a stalled disk); left
	// open, its goroutines end with the process.
	if e.attempts != nil && senderStopped {
		close(e.attempts)
	}
	// The pool's workers may be blocked in an HTTP call: they are not
	// waited for; their answers go nowhere, and they end after it.
	if e.pool != nil {
		if err := root.StopFuture(e.pool).Wait(); err == nil {
			close(e.calls)
		}
	}
	e.system.Shutdown()
	e.dispatch.close()
}

// props are the props of every actor of the engine: its mailboxes run on
// the engine's dispatcher.
func (e *Engine) props(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer, actor.WithDispatcher(e.dispatch))
}

func (e *Engine) stopping() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.mu.stopping
}

// Redeliver starts delivery again for a failed request (an operator's
// command): the store moves it back to decided with a fresh schedule.
func (e *Engine) Redeliver(id string) (session.Record, error) {
	if e.stopping() {
		return session.Record{}, ErrStopping
	}
	rec, err := e.cfg.Store.Redeliver(id, e.cfg.now().UTC())
	if err != nil {
		return rec, err
	}
	e.system.Root.Send(e.sender, &DeliverCallback{Record: rec})
	return rec, nil
}
