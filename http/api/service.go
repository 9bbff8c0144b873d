package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/http/internal/fastlog"
	"github.com/chargeauth/chargeauth/http/webhook"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// Config configures a Service: the serve command's flags, bound in cmd/.
type Config struct {
	// Listen is the public API's address. Default: ":8080".
	Listen string
	// AdminListen is the admin listener's address. Default: "127.0.0.1:8082".
	AdminListen string
	// DataDir holds the Pebble store. Default: "./data".
	DataDir string
	// AuthzURL is the authorization service's base URL. Required (the serve
	// command starts the embedded one and passes its URL).
	AuthzURL string
	// DecisionTimeout: accept to deadline. Default: 10s.
	DecisionTimeout time.Duration
	// AuthzConcurrency bounds the calls to the authorization service.
	// Default: 64.
	AuthzConcurrency int
	// CallbackSecrets sign callbacks ("whsec_..."). Default: none.
	CallbackSecrets []string
	// CallbackSchedule is the delays between callback attempts (see
	// package schedule). Default: schedule.Default.
	CallbackSchedule schedule.Delays
	// CallbackMaxAttempts caps the attempts, the first included.
	// Default: 0, the schedule's length.
	CallbackMaxAttempts int
	// CallbackMaxAge: no attempt later than this after the decision.
	// Default: 72h.
	CallbackMaxAge time.Duration
	// CallbackTimeout bounds one attempt. Default: 10s.
	CallbackTimeout time.Duration
	// AllowPrivateCallbacks lets callbacks reach loopback and private
	// addresses. Default: false.
	AllowPrivateCallbacks bool
	// CallbackAllowCIDRs opens these ranges to callbacks even without
	// AllowPrivateCallbacks. Default: none.
	CallbackAllowCIDRs []netip.Prefix
	// CallbackHostConcurrency bounds callbacks in flight per receiver host.
	// Default: 64.
	CallbackHostConcurrency int
	// CallbackCAFile adds trusted roots for HTTPS callbacks. Default: "".
	CallbackCAFile string
	// MaxInflight bounds the live request actors. Default: 10000.
	MaxInflight int
	// MaxBacklog bounds the requests waiting in the store; 0: disk only.
	// Default: 0.
	MaxBacklog int
	// ShutdownGrace is how long Close lets in-flight work finish; 0 means
	// none. Default: 0 (the serve command's flag defaults to 10s).
	ShutdownGrace time.Duration
	// Retention keeps delivered and failed records this long. Default: 168h.
	Retention time.Duration
	// MinFreeDisk: below this many free bytes, accepts get 503.
	// Default: 256 MiB.
	MinFreeDisk uint64
	// AdminToken, when set, is the bearer token every admin route but
	// /healthz, /readyz and /metrics requires. Default: "" (open; the
	// serve command refuses a non-loopback admin address without one).
	AdminToken string
	// OwnAddrs are other listeners of this process (the embedded
	// authorization service) that callbacks must never reach, like the
	// public and admin listeners. Default: none.
	OwnAddrs []string
	// ACLStatus reports the embedded authorization service's ACL for
	// /metrics (authz.Server.ACLStatus). Default: nil, no ACL metrics (an
	// external authorization service keeps its own).
	ACLStatus func() authz.ACLStatus
	// Logger. Default: slog.Default().
	Logger *slog.Logger

	// NodeID names this node in a fleet; its node number (the trailing
	// number of the id, see actors.NodeNumber) is carried by every request
	// id. Default: "" (node number 0; required with Peers).
	NodeID string
	// Peers are the nodes of the fleet, this one included. A GET of an id
	// owned by another of them is forwarded there once. Default: none.
	Peers []Peer

	// FS is the store's filesystem (tests: vfs.NewMem()). Default: vfs.Default.
	FS vfs.FS

	now        func() time.Time                                // test-only clock
	lookupHost func(context.Context, string) ([]string, error) // test-only resolver of peer names
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = ":8080"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:8082"
	}
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.Retention == 0 {
		c.Retention = 168 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.now == nil {
		c.now = time.Now
	}
}

// Validate reports the first invalid field that the packages below do not
// check themselves.
func (c *Config) Validate() error {
	switch {
	case c.AuthzURL == "":
		return errors.New("api: authz URL is required")
	case c.ShutdownGrace < 0:
		return fmt.Errorf("api: shutdown grace %v: must not be negative", c.ShutdownGrace)
	case c.Retention < 0:
		return fmt.Errorf("api: retention %v: must not be negative", c.Retention)
	}
	_, err := checkFleet(c.NodeID, c.Peers)
	return err
}

// ErrListen marks a listener that could not be bound (address in use, bad
// address): a configuration error.
var ErrListen = errors.New("api: listen")

// Service is a running chargeauth: store, engine, public and admin listeners.
type Service struct {
	cfg    Config
	log    *slog.Logger
	store  *persistence.Store
	engine atomic.Pointer[actors.Engine]
	ready  atomic.Bool

	publicLn, adminLn net.Listener
	public, adminSrv  *fasthttp.Server
	metrics           *metrics
	node              uint16     // this node's number (NodeID)
	fwd               *forwarder // GETs of ids other nodes own

	serveErr   chan error
	stopRetain chan struct{}
	retainDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// New binds both listeners (so a port clash fails before anything starts),
// opens the store, serves the admin listener (not ready yet), resumes the
// engine from the store and then serves the public API. It returns once the
// service is ready.
func New(cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Logger, serveErr: make(chan error, 2),
		stopRetain: make(chan struct{}), retainDone: make(chan struct{})}
	s.node, _ = checkFleet(cfg.NodeID, cfg.Peers) // checked by Validate
	s.fwd = newForwarder(cfg.NodeID, s.node, cfg.Peers, cfg.AdminListen, cfg.lookupHost)
	var err error
	if s.publicLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrListen, cfg.Listen, err)
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		s.publicLn.Close()
		return nil, fmt.Errorf("%w %s (admin): %v", ErrListen, cfg.AdminListen, err)
	}
	if err := s.start(); err != nil {
		s.publicLn.Close()
		s.adminLn.Close()
		if s.adminSrv != nil {
			_ = s.adminSrv.Shutdown()
		}
		if s.store != nil {
			_ = s.store.Close()
		}
		return nil, err
	}
	return s, nil
}

func (s *Service) start() error {
	cfg := &s.cfg
	var err error
	s.store, err = persistence.Open(persistence.Config{
		Dir: cfg.DataDir, FS: cfg.FS, MinFreeDisk: cfg.MinFreeDisk, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	s.metrics = newMetrics(s.engine.Load, s.store)
	s.metrics.registerOps(s)

	s.adminSrv = &fasthttp.Server{
		Handler: guardAdmin(cfg.AdminToken, newAdmin(s, s.metrics).handle), Name: "chargeauth-admin",
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute,
		ReadBufferSize: MaxHeaderSize, ErrorHandler: s.framingError,
		SecureErrorLogMessage: true, Logger: slogPrintf(s.log),
	}
	go func() { s.serveErr <- s.adminSrv.Serve(s.adminLn) }()
	s.log.Info("admin listener", "addr", s.adminLn.Addr().String())

	client, err := authz.NewClient(authz.ClientConfig{URL: cfg.AuthzURL, MaxConns: max(cfg.AuthzConcurrency, 64)})
	if err != nil {
		return err
	}
	own := append([]string{s.publicLn.Addr().String(), s.adminLn.Addr().String()}, cfg.OwnAddrs...)
	sender, err := webhook.New(webhook.Config{
		Secrets: cfg.CallbackSecrets, AllowPrivate: cfg.AllowPrivateCallbacks, OwnListeners: own,
		AllowCIDRs: cfg.CallbackAllowCIDRs, CAFile: cfg.CallbackCAFile,
		MaxConnsPerHost: cfg.CallbackHostConcurrency, Timeout: cfg.CallbackTimeout, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	engine, err := actors.Start(actors.Config{
		Store:     s.store,
		Authorize: client.Authorize,
		Deliver: func(deadline time.Time, id string, req session.Request, status session.Status) actors.DeliveryResult {
			r := sender.Send(deadline, id, req, status)
			return actors.DeliveryResult{StatusCode: r.StatusCode, Err: r.Err, Retryable: r.Retryable, RetryAfter: r.RetryAfter, Response: r.Response}
		},
		Logger:                  cfg.Logger,
		DecisionTimeout:         cfg.DecisionTimeout,
		AuthzConcurrency:        cfg.AuthzConcurrency,
		MaxInflight:             cfg.MaxInflight,
		MaxBacklog:              cfg.MaxBacklog,
		CallbackSchedule:        cfg.CallbackSchedule,
		CallbackMaxAttempts:     cfg.CallbackMaxAttempts,
		CallbackTimeout:         cfg.CallbackTimeout,
		CallbackMaxAge:          cfg.CallbackMaxAge,
		CallbackHostConcurrency: cfg.CallbackHostConcurrency,
		Observe:                 s.metrics.observer(),
		Node:                    s.node,
	})
	if err != nil {
		return err
	}
	s.engine.Store(engine)

	f := &front{engine: engine, store: s.store, metrics: s.metrics, now: cfg.now, fwd: s.fwd}
	s.public = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if rejectAmbiguousFraming(ctx) {
				s.metrics.outcome("invalid")
				return
			}
			f.handle(ctx)
		},
		Name:                  "chargeauth",
		MaxRequestBodySize:    MaxBodySize,
		ReadBufferSize:        MaxHeaderSize,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           2 * time.Minute,
		ErrorHandler:          s.publicFramingError,
		SecureErrorLogMessage: true,
		Logger:                slogPrintf(s.log),
	}
	go s.retain()
	go func() { s.serveErr <- s.public.Serve(s.publicLn) }()
	s.log.Info("public listener", "addr", s.publicLn.Addr().String())
	s.ready.Store(true)
	return nil
}

// Addr is the public listener's address.
func (s *Service) Addr() string { return s.publicLn.Addr().String() }

// AdminAddr is the admin listener's address.
func (s *Service) AdminAddr() string { return s.adminLn.Addr().String() }

// Engine is the running actor engine.
func (s *Service) Engine() *actors.Engine { return s.engine.Load() }

// Store is the open store.
func (s *Service) Store() *persistence.Store { return s.store }

// Redeliver starts delivery again for a failed request.
func (s *Service) Redeliver(id string) (session.Record, error) {
	e := s.engine.Load()
	if e == nil {
		return session.Record{}, ErrNotReady
	}
	return e.Redeliver(id)
}

// errNotStarted: resume is not done yet, or the service is closing.
var errNotStarted = errors.New("api: not started or closing")

// readiness is what /readyz and chargeauth_ready report: nil when this
// node should take traffic, else why not.
func (s *Service) readiness() error {
	if !s.ready.Load() {
		return errNotStarted
	}
	return s.store.Health()
}

// ErrNotReady: the engine is still resuming; try again shortly.
var ErrNotReady = errors.New("api: not ready")

// Err delivers a listener's serve error, if one stops unexpectedly.
func (s *Service) Err() <-chan error { return s.serveErr }

// Drain turns /readyz to 503 while the node goes on serving: the first
// step of a graceful stop, so that a load balancer takes the node out of
// its rotation before Close stops the listeners.
func (s *Service) Drain() {
	s.ready.Store(false)
}

// Close stops taking requests (readiness goes 503 first), lets in-flight
// work finish for up to ShutdownGrace, stops the engine, closes the store,
// and last the admin listener.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.ready.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
		defer cancel()
		if err := s.public.ShutdownWithContext(ctx); err != nil {
			s.log.Warn("public listener shutdown", "err", err)
		}
		s.engine.Load().Stop(time.Until(deadlineOf(ctx)))
		close(s.stopRetain)
		<-s.retainDone
		s.closeErr = s.store.Close()
		_ = s.adminSrv.Shutdown()
		s.log.Info("stopped")
	})
	return s.closeErr
}

// retain deletes delivered and failed records older than Retention, in
// batches, every tenth of the retention (at most every minute). Accepts do
// not wait for it: they take none of the locks it holds.
func (s *Service) retain() {
	defer close(s.retainDone)
	every := min(max(s.cfg.Retention/10, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopRetain:
			return
		case <-t.C:
		}
		s.expireIdempotencyKeys(s.stopRetain)
		for {
			n, err := s.store.Expire(s.cfg.now().Add(-s.cfg.Retention), 1000)
			if err != nil {
				if !errors.Is(err, persistence.ErrClosing) {
					s.log.Error("retention", "err", err)
				}
				break
			}
			if n > 0 {
				s.log.Info("retention: deleted old records", "count", n)
			}
			if n < 1000 {
				break
			}
			select {
			case <-s.stopRetain:
				return
			default:
			}
		}
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// MaxHeaderSize bounds a request's line and headers (fasthttp's read
// buffer); larger headers get 431.
const MaxHeaderSize = 8 << 10

// framingError answers a request fasthttp could not read, on the public and
// admin listeners, in the failed shape: 431 for headers over MaxHeaderSize,
// 413 for a body over MaxBodySize, 400 for anything else (bad request line,
// header, Content-Length or chunking, a body cut short). It never puts the
// request's bytes in the answer or the log.
// The public listener's answers count in chargeauth_requests_total (431
// and malformed framing as "invalid").
func (s *Service) framingError(ctx *fasthttp.RequestCtx, err error) {
	writeFraming(ctx, err)
}

func (s *Service) publicFramingError(ctx *fasthttp.RequestCtx, err error) {
	if writeFraming(ctx, err) == failTooLarge {
		s.metrics.outcome("too_large")
	} else {
		s.metrics.outcome("invalid")
	}
}

func writeFraming(ctx *fasthttp.RequestCtx, err error) failure {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		writeFailed(ctx, failHeadersTooLarge, nil)
		return failHeadersTooLarge
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeFailed(ctx, failTooLarge, nil)
		return failTooLarge
	default:
		writeFailed(ctx, failInvalid, []session.FieldError{{Field: "request", Message: "malformed HTTP request"}})
		return failInvalid
	}
}

// slogPrintf routes fasthttp's Printf logger to slog, without the request
// bytes fasthttp quotes in its errors (see package fastlog).
func slogPrintf(log *slog.Logger) fastlog.Logger {
	return fastlog.Logger{Log: log, Attrs: []any{"component", "fasthttp"}}
}
