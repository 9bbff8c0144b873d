package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/session"
)

// CeilingConfig configures a ceiling workload: the same load against a
// bare fasthttp handler that parses the body as chargeauth does and answers
// 202 at once.
type CeilingConfig struct {
	Load LoadConfig
	// Durable, if set, makes it the durable ceiling: before its 202 the
	// handler writes the body to a Pebble store (default options) in a
	// fresh directory under TempDir on real disk, one pebble.Sync Set per
	// request, as the simplest durable front would.
	Durable bool
	TempDir string
}

// Run serves the bare handler on 127.0.0.1:0, applies the load and
// returns the report.
func (cfg CeilingConfig) Run() (*Report, error) {
	if err := cfg.Load.Validate(); err != nil {
		return nil, err
	}
	name := "ceiling"
	var db *pebble.DB
	if cfg.Durable {
		name = "durable"
		dir, err := os.MkdirTemp(cfg.TempDir, "chargeauth-bench-durable-")
		if err != nil {
			return nil, fmt.Errorf("durable ceiling: data dir: %w", err)
		}
		defer os.RemoveAll(dir)
		if db, err = pebble.Open(dir, &pebble.Options{Logger: quietPebble{}}); err != nil {
			return nil, fmt.Errorf("durable ceiling: %w", err)
		}
		defer db.Close()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("%s: listen: %w", name, err)
	}
	var ids atomic.Uint64
	// The server is set up as chargeauth's public one is (http/api/service.go).
	srv := &fasthttp.Server{
		Handler:            func(ctx *fasthttp.RequestCtx) { ceilingHandle(ctx, &ids, db) },
		Name:               name,
		MaxRequestBodySize: 16 << 10,
		ReadTimeout:        10 * time.Second,
		WriteTimeout:       10 * time.Second,
		IdleTimeout:        2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	body := requestBody("http://127.0.0.1:9/callback")
	mem := startMemSampler()
	res := runLoad(cfg.Load, ln.Addr().String(), body, nil, nil)
	m := mem.Stop()

	if err := srv.Shutdown(); err != nil {
		return nil, fmt.Errorf("%s: shutdown: %w", name, err)
	}
	if err := <-serveErr; err != nil {
		return nil, fmt.Errorf("%s: serve: %w", name, err)
	}
	r := newReport(name, res)
	r.Memory = &m
	return r, nil
}

// ceilingHandle parses and validates the body with session.ParseRequest,
// writes it under its id with pebble.Sync if db is set, and answers 202
// with a small JSON body; anything else is a 400, 405 or 503.
func ceilingHandle(ctx *fasthttp.RequestCtx, ids *atomic.Uint64, db *pebble.DB) {
	relayHandle(ctx, ids, db, nil)
}

// relayHandle is ceilingHandle that, with relay set, names the request by
// a UUID-shaped id and hands the request to relay after the write, before
// the 202.
func relayHandle(ctx *fasthttp.RequestCtx, ids *atomic.Uint64, db *pebble.DB, relay func(id string, req session.Request)) {
	if !ctx.IsPost() {
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
		return
	}
	req, problems := session.ParseRequest(ctx.PostBody())
	if problems != nil {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"failed","error":` + strconv.Quote(session.JoinFieldErrors(problems)) + `}`)
		return
	}
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], ids.Add(1))
	if db != nil {
		if err := db.Set(key[:], ctx.PostBody(), pebble.Sync); err != nil {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			return
		}
	}
	var buf [96]byte
	b := append(buf[:0], `{"status":"accepted","request_id":"`...)
	n := binary.BigEndian.Uint64(key[:])
	if relay != nil {
		// The sink's tracker matches callbacks to 202s by a UUID-shaped id.
		id := fmt.Sprintf("00000000-0000-0000-%04x-%012x", n>>48, n&(1<<48-1))
		relay(id, req)
		b = append(b, id...)
	} else {
		b = strconv.AppendUint(b, n, 10)
	}
	b = append(b, `"}`...)
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	ctx.SetContentType("application/json")
	ctx.SetBody(b) // copies
}

// Request fields both workloads send. The token is in the ACL the chargeauth
// workload's authorization service is given, so every decision is allowed.
const (
	benchStation = "123e4567-e89b-12d3-a456-426614174000"
	benchToken   = "benchDriverToken00000001"
)

// requestBody is the valid POST body both workloads send.
func requestBody(callbackURL string) []byte {
	return fmt.Appendf(nil, `{"station_id":%q,"driver_token":%q,"callback_url":%q}`,
		benchStation, benchToken, callbackURL)
}

// quietPebble is pebble.Logger without the informational lines, which would
// interleave with the bench's table.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any) {}

func (quietPebble) Errorf(format string, args ...any) {
	log.Printf("durable ceiling: "+format, args...)
}

func (quietPebble) Fatalf(format string, args ...any) {
	log.Fatalf("durable ceiling: "+format, args...)
}

// relayer is the relay ceilings' callback half: each accepted request is
// POSTed to its callback URL with the decision "allowed" and a webhook-id,
// on kept-alive connections. With the durable write before it, it is the
// least a service can do for chargeauth's contract without an
// authorization service: a durable accept and a callback per request.
//
// relay POSTs from a goroutine of its own, after the 202 ("relay"); post
// POSTs from the handler, before the 202 ("relay-inline"): no hand-off at
// all, so its CPU is the floor of the two, while its ack latency includes
// the callback's round trip and is no floor.
type relayer struct {
	client *fasthttp.Client
}

func newRelayer() *relayer {
	// A burst's callbacks wait for one of the 64 connections, as
	// chargeauth's do (--callback-host-concurrency).
	return &relayer{client: &fasthttp.Client{MaxConnsPerHost: 64, MaxConnWaitTimeout: time.Minute}}
}

func (r *relayer) relay(id string, req session.Request) {
	go r.post(id, req)
}

func (r *relayer) post(id string, req session.Request) {
	r.postStatus(id, req, session.StatusAllowed)
}

// postStatus POSTs the callback of id with status.
func (r *relayer) postStatus(id string, req session.Request, status session.Status) {
	freq, fresp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(freq)
	defer fasthttp.ReleaseResponse(fresp)
	freq.SetRequestURI(req.CallbackURL)
	freq.Header.SetMethod(fasthttp.MethodPost)
	freq.Header.SetContentType("application/json")
	freq.Header.Set("webhook-id", id)
	freq.SetBody(fmt.Appendf(nil, `{"station_id":%q,"driver_token":%q,"status":%q}`, req.StationID, req.DriverToken, status))
	if err := r.client.DoTimeout(freq, fresp, 10*time.Second); err != nil {
		log.Printf("relay ceiling: callback %s: %v", id, err)
	}
}

// authzRelayer is the relay-authz ceiling's second half: before the
// callback, it asks chargeauth's authorization service (http/authz), served
// in the relay's own process on loopback as serve embeds it, through
// chargeauth's own client with batching on, as serve uses it (concurrent
// handlers share round trips), and calls back the status it answers. No
// goroutine is handed a request: with the durable write before it, this is
// the least the whole contract costs, four HTTP endpoints crossed (front
// in, authorization out and in, callback out) and one synced write. Its
// ACL blocks the bench's token, so that its callbacks (not_allowed, where
// the other relays say allowed) show that every request was asked.
type authzRelayer struct {
	relayer
	authz *authz.Client
}

// relayACL blocks the bench's token: relay-authz calls back not_allowed.
var relayACL = []byte(`{"entries": [{"driver_token": "` + benchToken + `", "status": "blocked"}]}`)

// newAuthzRelayer starts the authorization service; stop ends it.
func newAuthzRelayer() (_ *authzRelayer, stop func(), _ error) {
	list, err := acl.Parse(relayACL)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := authz.NewServer(authz.Config{ACL: list, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go srv.Serve(ln) //nolint:errcheck // ends at Shutdown
	client, err := authz.NewClient(authz.ClientConfig{URL: "http://" + ln.Addr().String(), Batch: true})
	if err != nil {
		_ = srv.Shutdown()
		return nil, nil, err
	}
	return &authzRelayer{relayer: *newRelayer(), authz: client}, func() { _ = srv.Shutdown() }, nil
}

func (r *authzRelayer) authorizeAndPost(id string, req session.Request) {
	status, _, err := r.authz.Authorize(time.Now().Add(10*time.Second), req.StationID, req.DriverToken)
	if err != nil {
		log.Printf("relay-authz ceiling: authorize %s: %v", id, err)
		status = session.StatusUnknown
	}
	r.postStatus(id, req, status)
}
