package api

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/http/internal/fastlog"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// Config is what the HTTP servers need from the node that runs them
// (package node builds the store and the engine and hands them over here).
type Config struct {
	// Store is the open store. Required.
	Store *persistence.Store
	// Engine returns the running engine: nil while it resumes, before
	// the public server exists. Required.
	Engine func() *actors.Engine
	// Serving reports whether the node takes traffic: false before resume
	// is done, while it drains and while it closes (/readyz then answers
	// 503 whatever the store says). Required.
	Serving func() bool
	// AdminToken, when set, is the bearer token every admin route but
	// /healthz, /readyz and /metrics requires. Default: "" (open).
	AdminToken string
	// ACLStatus reports the embedded authorization service's ACL for
	// /metrics (authz.Server.ACLStatus). Default: nil, no ACL metrics (an
	// external authorization service keeps its own).
	ACLStatus func() authz.ACLStatus
	// ReloadACL reloads the embedded authorization service's ACL file now
	// (the console's "Reload ACL"). Default: nil, no reload from the
	// console (no --acl file, or an external authorization service).
	ReloadACL func() error
	// DiskUsage reports the free and total bytes under the data
	// directory, for the console. Default: nil, not shown.
	DiskUsage func() (free, total uint64, err error)
	// NodeID and Node name this node in a fleet (Node: its node number,
	// from CheckFleet); Peers are the fleet's nodes, this one included. A
	// GET of an id owned by another of them is forwarded there once.
	NodeID string
	Node   uint16
	Peers  []Peer
	// AdminListen is this node's admin address: a peer without an admin
	// URL is reached on its public host with this port.
	AdminListen string
	// LookupHost resolves peer names. Default: net.DefaultResolver.
	LookupHost func(context.Context, string) ([]string, error)
	// Logger. Default: slog.Default().
	Logger *slog.Logger
	// Now is the clock of parsed "since" durations. Default: time.Now.
	Now func() time.Time
}

// Server serves chargeauth's HTTP: the admin listener's handler (usable
// while the engine resumes) and, once the engine runs, the public API's.
// It opens nothing and starts nothing: the node serves its servers.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *persistence.Store
	metrics *metrics
	admin   *admin
	fwd     *forwarder // GETs of ids other nodes own
}

// New builds the HTTP side from its dependencies and registers the
// metrics (the engine's observer included: pass Observer to the engine).
// It starts the console's sampler: Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, store: cfg.Store}
	s.fwd = newForwarder(cfg.NodeID, cfg.Node, cfg.Peers, cfg.AdminListen, cfg.LookupHost)
	s.metrics = newMetrics(cfg.Engine, cfg.Store)
	s.metrics.registerOps(s)
	var err error
	if s.admin, err = newAdmin(s, s.metrics); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops the console's sampler.
func (s *Server) Close() { s.admin.console.Close() }

// Observer counts the engine's events in /metrics.
func (s *Server) Observer() actors.Observer { return s.metrics.observer() }

// AdminServer is the admin listener's server: health, readiness,
// metrics, the API description and the sessions.
func (s *Server) AdminServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler: guardAdmin(s.cfg.AdminToken, s.admin.console.AuthorizeRead, s.admin.handle), Name: "chargeauth-admin",
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute,
		ReadBufferSize: MaxHeaderSize, ErrorHandler: s.framingError,
		SecureErrorLogMessage: true, Logger: slogPrintf(s.log),
	}
}

// PublicServer is the public API's server, in front of engine.
func (s *Server) PublicServer(engine *actors.Engine) *fasthttp.Server {
	f := &front{engine: engine, store: s.store, metrics: s.metrics, now: s.cfg.Now, fwd: s.fwd}
	return &fasthttp.Server{
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
}

// Redeliver starts delivery again for a failed request.
func (s *Server) Redeliver(id string) (session.Record, error) {
	e := s.cfg.Engine()
	if e == nil {
		return session.Record{}, ErrNotReady
	}
	return e.Redeliver(id)
}

// errNotStarted: resume is not done yet, or the node drains or closes.
var errNotStarted = errors.New("api: not started or closing")

// readiness is what /readyz and chargeauth_ready report: nil when this
// node should take traffic, else why not.
func (s *Server) readiness() error {
	if !s.cfg.Serving() {
		return errNotStarted
	}
	return s.store.Health()
}

// ErrNotReady: the engine is still resuming; try again shortly.
var ErrNotReady = errors.New("api: not ready")

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
func (s *Server) framingError(ctx *fasthttp.RequestCtx, err error) {
	writeFraming(ctx, err)
}

func (s *Server) publicFramingError(ctx *fasthttp.RequestCtx, err error) {
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
