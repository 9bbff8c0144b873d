package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/internal/fastlog"
	"github.com/chargeauth/chargeauth/session"
)

// Config configures a Server.
type Config struct {
	// ACL is the access control list decisions are made from.
	// Default: acl.Sample().
	ACL *acl.ACL
	// Logger receives the server's logs.
	// Default: slog.Default().
	Logger *slog.Logger

	// now is the clock used for expiry (test-only). Default: time.Now.
	now func() time.Time
}

func (c *Config) setDefaults() {
	if c.ACL == nil {
		c.ACL = acl.Sample()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
}

// Server limits. The request body is two short strings, or a batch of
// them (maxBatchItems).
const (
	maxRequestBodySize = 1 << 20
	readTimeout        = 5 * time.Second
	writeTimeout       = 5 * time.Second
	idleTimeout        = 60 * time.Second
)

// Server answers authorization requests from an ACL that can be swapped
// while it runs.
type Server struct {
	acl atomic.Pointer[acl.ACL]
	log *slog.Logger
	now func() time.Time
	srv *fasthttp.Server

	stats aclStats // for ACLStatus

	mu struct {
		sync.Mutex
		closed    bool
		listeners []net.Listener
	}
}

// NewServer returns a Server; it serves nothing until Serve.
func NewServer(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{log: cfg.Logger, now: cfg.now}
	s.acl.Store(cfg.ACL)
	s.stats.loaded(time.Now())
	s.srv = &fasthttp.Server{
		Handler:               s.Handler,
		Name:                  "chargeauth-authz",
		ReadTimeout:           readTimeout,
		WriteTimeout:          writeTimeout,
		IdleTimeout:           idleTimeout,
		MaxRequestBodySize:    maxRequestBodySize,
		NoDefaultServerHeader: true,
		// fasthttp's own messages never quote a request (tokens), and go
		// to slog.
		SecureErrorLogMessage: true,
		Logger:                fastlog.Logger{Log: cfg.Logger, Attrs: []any{"component", "fasthttp"}},
	}
	return s
}

// SetACL replaces the ACL; requests decided after it returns use a.
// A nil a is ignored. An a with the content of the loaded one (the same
// version, a hash of the file) keeps the loaded one and logs "acl
// unchanged" at debug, not "acl replaced": a touched or rewritten file with
// the same bytes changes nothing. Either way it counts as a successful
// load (ACLStatus.LoadedAt).
func (s *Server) SetACL(a *acl.ACL) {
	if a == nil {
		return
	}
	s.stats.loaded(time.Now())
	if old := s.acl.Load(); old != nil && old.Version() == a.Version() {
		s.log.Debug("authz: acl unchanged", "version", a.Version(), "entries", a.Len())
		return
	}
	old := s.acl.Swap(a)
	s.log.Info("authz: acl replaced", "old_version", old.Version(), "version", a.Version(), "entries", a.Len())
}

// Serve serves connections from ln until Shutdown. It returns nil after
// Shutdown, and at once if Shutdown came first.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.mu.listeners = append(s.mu.listeners, ln)
	s.mu.Unlock()
	a := s.acl.Load()
	s.log.Info("authorization service listener", "addr", ln.Addr().String(), "acl_version", a.Version(), "acl_entries", a.Len())
	return s.srv.Serve(ln)
}

// Shutdown stops accepting connections and waits for requests in flight
// to finish.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	s.mu.closed = true
	lns := s.mu.listeners
	s.mu.listeners = nil
	s.mu.Unlock()

	err := s.srv.Shutdown()
	// fasthttp's Shutdown returns at once if Serve has not yet registered its
	// listener; closing it here makes such a Serve return.
	for _, ln := range lns {
		if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("authz: shutdown: %w", err)
	}
	return nil
}

// Handler routes a request; see the package comment.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/authorize":
		if !ctx.IsPost() {
			writeError(ctx, fasthttp.StatusMethodNotAllowed, "POST", "method not allowed")
			return
		}
		s.authorize(ctx)
	case "/authorize/batch":
		if !ctx.IsPost() {
			writeError(ctx, fasthttp.StatusMethodNotAllowed, "POST", "method not allowed")
			return
		}
		s.authorizeBatch(ctx)
	case "/acl":
		if !ctx.IsGet() && !ctx.IsHead() {
			writeError(ctx, fasthttp.StatusMethodNotAllowed, "GET, HEAD", "method not allowed")
			return
		}
		a := s.acl.Load()
		ctx.SetContentType("application/json")
		ctx.Response.AppendBodyString(`{"version":"`)
		ctx.Response.AppendBodyString(a.Version())
		ctx.Response.AppendBodyString(`","entries":`)
		var n [20]byte
		ctx.Response.AppendBody(strconv.AppendInt(n[:0], int64(a.Len()), 10))
		ctx.Response.AppendBodyString(`}`)
	case "/healthz":
		if !ctx.IsGet() && !ctx.IsHead() {
			writeError(ctx, fasthttp.StatusMethodNotAllowed, "GET, HEAD", "method not allowed")
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"ok"}`)
	default:
		writeError(ctx, fasthttp.StatusNotFound, "", "not found")
	}
}

// authorizeRequest is the body of POST /authorize.
type authorizeRequest struct {
	StationID   string `json:"station_id"`
	DriverToken string `json:"driver_token"`
}

func (s *Server) authorize(ctx *fasthttp.RequestCtx) {
	var req authorizeRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "", "bad JSON: "+err.Error())
		return
	}
	switch {
	case req.StationID == "" && req.DriverToken == "":
		writeError(ctx, fasthttp.StatusBadRequest, "", "station_id is required; driver_token is required")
		return
	case req.StationID == "":
		writeError(ctx, fasthttp.StatusBadRequest, "", "station_id is required")
		return
	case req.DriverToken == "":
		writeError(ctx, fasthttp.StatusBadRequest, "", "driver_token is required")
		return
	}

	status, reason := s.acl.Load().Decide(req.StationID, req.DriverToken, s.now())
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("authz: decided",
			"station_id", req.StationID,
			"driver_token", session.MaskToken(req.DriverToken),
			"status", string(status),
			"reason", reason)
	}

	// status and reason are constants from package acl: no escaping needed.
	ctx.SetContentType("application/json")
	ctx.Response.AppendBodyString(`{"status":"`)
	ctx.Response.AppendBodyString(string(status))
	if reason != "" {
		ctx.Response.AppendBodyString(`","reason":"`)
		ctx.Response.AppendBodyString(reason)
	}
	ctx.Response.AppendBodyString(`"}`)
}

// errorBody is the shape of every non-200 answer.
type errorBody struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

// writeError writes {"status":"failed","error":msg} with code, and an Allow
// header when allow is not empty.
func writeError(ctx *fasthttp.RequestCtx, code int, allow, msg string) {
	body, err := json.Marshal(errorBody{Status: "failed", Error: msg})
	if err != nil { // cannot happen for two strings
		body = []byte(`{"status":"failed","error":"internal error"}`)
	}
	if allow != "" {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
	}
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
