package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/http/api"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/http/webhook"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// ErrListen marks a listener that could not be bound (address in use, bad
// address): a configuration error.
var ErrListen = errors.New("node: listen")

// ErrACL marks an ACL file the embedded authorization service could not
// load: a configuration error.
var ErrACL = errors.New("node: acl")

// Node is a running chargeauth: the embedded authorization service (unless
// AuthzURL names another), the store, the actor engine, the public and
// admin listeners and the retention loop.
type Node struct {
	cfg    Config
	log    *slog.Logger
	store  *persistence.Store
	engine atomic.Pointer[actors.Engine]
	ready  atomic.Bool
	http   *api.Server

	authzSrv          *authz.Server // the embedded one; nil with AuthzURL
	publicLn, adminLn net.Listener
	public, admin     *fasthttp.Server

	serveErr   chan error
	stopRetain chan struct{}
	retainDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// Start validates cfg and starts a node. It reads top to bottom as one
// request flows:
//
//  1. the listeners are bound first, so that a port clash fails before
//     anything starts, and the embedded authorization service serves;
//  2. the store opens (persistence): a POST is acknowledged once it is
//     written there;
//  3. the admin listener serves (http/api; /readyz 503 until step 6);
//  4. the authorization client (http/authz) and the callback sender
//     (http/webhook) are built: how a request is decided and called back;
//  5. the engine (actors) resumes from the store: request actors call the
//     authorization client, persist the decision and hand the callback to
//     the sender, retried on the schedule;
//  6. the public API (http/api) serves, in front of the engine, and the
//     retention loop runs.
//
// It returns once the node is ready. A configuration error (Validate's, a
// listener that cannot bind: ErrListen, an ACL that cannot load: ErrACL) is
// reported before anything is written.
func Start(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, serveErr: make(chan error, 2),
		stopRetain: make(chan struct{}), retainDone: make(chan struct{})}
	if err := n.listen(); err != nil {
		n.closeListeners()
		return nil, err
	}
	if err := n.start(); err != nil {
		n.closeListeners()
		if n.admin != nil {
			_ = n.admin.Shutdown()
		}
		if n.http != nil {
			n.http.Close()
		}
		if n.store != nil {
			_ = n.store.Close()
		}
		if n.authzSrv != nil {
			_ = n.authzSrv.Shutdown()
		}
		return nil, err
	}
	return n, nil
}

// listen binds the public and admin listeners and, without AuthzURL,
// starts the embedded authorization service.
func (n *Node) listen() error {
	cfg := &n.cfg
	var err error
	if n.publicLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return mark(ErrListen, "node: listen %s: %v", cfg.Listen, err)
	}
	if n.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		return mark(ErrListen, "node: listen %s (admin): %v", cfg.AdminListen, err)
	}
	if cfg.AuthzURL != "" {
		return nil
	}
	a := acl.Sample()
	if cfg.ACL != "" {
		if a, err = acl.Load(cfg.ACL); err != nil {
			return mark(ErrACL, "--acl: %v", err)
		}
	}
	ln, err := net.Listen("tcp", cfg.AuthzListen)
	if err != nil {
		return mark(ErrListen, "--authz-listen: %v", err)
	}
	srv := authz.NewServer(authz.Config{ACL: a, Logger: n.log.With("component", "authz")})
	n.authzSrv = srv
	go func() { // srv, not n.authzSrv: a failed Start sets the field to nil
		if err := srv.Serve(ln); err != nil {
			n.log.Error("authorization service stopped", "err", err)
		}
	}()
	cfg.AuthzURL = "http://" + ln.Addr().String()
	cfg.OwnAddrs = append(cfg.OwnAddrs, ln.Addr().String())
	if cfg.ACLStatus == nil {
		cfg.ACLStatus = n.authzSrv.ACLStatus
	}
	return nil
}

func (n *Node) closeListeners() {
	for _, ln := range []net.Listener{n.publicLn, n.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if n.authzSrv != nil {
		_ = n.authzSrv.Shutdown()
		n.authzSrv = nil
	}
}

func (n *Node) start() error {
	cfg := &n.cfg
	nodeID, number, peers, _ := cfg.fleet() // checked by Validate
	adminToken, _ := cfg.adminToken()       // checked by Validate
	cidrs, _ := cfg.allowCIDRs()            // checked by Validate

	var err error
	n.store, err = persistence.Open(persistence.Config{
		Dir: cfg.DataDir, FS: cfg.FS, MinFreeDisk: uint64(cfg.MinFreeDisk), Logger: cfg.Logger,
		SyncLinger: persistence.DefaultSyncLinger,
	})
	if err != nil {
		return err
	}

	var reloadACL func() error // the console's "Reload ACL": only for an embedded service's --acl file
	if n.authzSrv != nil && cfg.ACL != "" {
		reloadACL = func() error { return n.authzSrv.Reload(cfg.ACL) }
	}
	n.http, err = api.New(api.Config{
		Store: n.store, Engine: n.engine.Load, Serving: n.ready.Load,
		AdminToken: adminToken, ACLStatus: cfg.ACLStatus, ReloadACL: reloadACL,
		DiskUsage: func() (free, total uint64, err error) {
			u, err := cfg.FS.GetDiskUsage(cfg.DataDir)
			return u.AvailBytes, u.TotalBytes, err
		},
		NodeID: nodeID, Node: number, Peers: peers, AdminListen: cfg.AdminListen, LookupHost: cfg.LookupHost,
		Logger: cfg.Logger, Now: cfg.Now,
	})
	if err != nil {
		return err
	}
	n.admin = n.http.AdminServer()
	go func() { n.serveErr <- n.admin.Serve(n.adminLn) }()
	n.log.Info("admin listener", "addr", n.adminLn.Addr().String())

	// The embedded service has the batch endpoint; an external one gets
	// batches only when the operator says it has it.
	batch := cfg.AuthzBatch || n.authzSrv != nil
	client, err := authz.NewClient(authz.ClientConfig{URL: cfg.AuthzURL, MaxConns: max(cfg.AuthzConcurrency, 64), Batch: batch})
	if err != nil {
		return err
	}
	own := append([]string{n.publicLn.Addr().String(), n.adminLn.Addr().String()}, cfg.OwnAddrs...)
	sender, err := webhook.New(webhook.Config{
		Secrets: strings.Fields(cfg.CallbackSecret), AllowPrivate: cfg.AllowPrivateCallbacks, OwnListeners: own,
		AllowCIDRs: cidrs, CAFile: cfg.CallbackCAFile,
		MaxConnsPerHost: cfg.CallbackHostConcurrency, Timeout: cfg.CallbackTimeout, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}

	engine, err := actors.Start(actors.Config{
		Store:     n.store,
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
		CallbackSchedule:        cfg.Schedule(),
		CallbackMaxAttempts:     cfg.CallbackMaxAttempts,
		CallbackTimeout:         cfg.CallbackTimeout,
		CallbackMaxAge:          cfg.CallbackMaxAge,
		CallbackHostConcurrency: cfg.CallbackHostConcurrency,
		Observe:                 n.http.Observer(),
		Node:                    number,
	})
	if err != nil {
		return err
	}
	n.engine.Store(engine)

	n.public = n.http.PublicServer(engine)
	go n.retain()
	go func() { n.serveErr <- n.public.Serve(n.publicLn) }()
	n.log.Info("public listener", "addr", n.publicLn.Addr().String())
	n.ready.Store(true)
	return nil
}

// Addr is the public listener's address.
func (n *Node) Addr() string { return n.publicLn.Addr().String() }

// AdminAddr is the admin listener's address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// AuthzURL is the authorization service's base URL: AuthzURL, or the
// embedded service's.
func (n *Node) AuthzURL() string { return n.cfg.AuthzURL }

// Authz is the embedded authorization service; nil with AuthzURL.
func (n *Node) Authz() *authz.Server { return n.authzSrv }

// Engine is the running actor engine.
func (n *Node) Engine() *actors.Engine { return n.engine.Load() }

// Store is the open store.
func (n *Node) Store() *persistence.Store { return n.store }

// Err delivers a listener's serve error, if one stops unexpectedly.
func (n *Node) Err() <-chan error { return n.serveErr }

// Drain turns /readyz to 503 while the node goes on serving: the first
// step of a graceful stop, so that a load balancer takes the node out of
// its rotation before Close stops the listeners.
func (n *Node) Drain() {
	n.ready.Store(false)
}

// Close stops taking requests (readiness goes 503 first), lets in-flight
// work finish for up to ShutdownGrace, stops the engine and the retention
// loop, closes the store, and last the admin listener and the embedded
// authorization service.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.ready.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownGrace)
		defer cancel()
		if err := n.public.ShutdownWithContext(ctx); err != nil {
			n.log.Warn("public listener shutdown", "err", err)
		}
		n.engine.Load().Stop(time.Until(deadlineOf(ctx)))
		close(n.stopRetain)
		<-n.retainDone
		n.closeErr = n.store.Close()
		_ = n.admin.Shutdown()
		n.http.Close()
		if n.authzSrv != nil {
			_ = n.authzSrv.Shutdown()
		}
		n.log.Info("stopped")
	})
	return n.closeErr
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// marked is an error of a kind (ErrListen, ErrACL) that says only msg.
type marked struct {
	kind error
	msg  string
}

func (m *marked) Error() string { return m.msg }
func (m *marked) Unwrap() error { return m.kind }

func mark(kind error, format string, args ...any) error {
	return &marked{kind, fmt.Sprintf(format, args...)}
}
