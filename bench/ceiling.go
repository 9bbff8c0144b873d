package main

import (
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// CeilingConfig configures the ceiling workload: the same load against a
// bare fasthttp handler that parses the body as chargeauth does and answers
// 202 at once.
type CeilingConfig struct {
	Load LoadConfig
}

// Run serves the bare handler on 127.0.0.1:0, applies the load and
// returns the report.
func (cfg CeilingConfig) Run() (*Report, error) {
	if err := cfg.Load.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("ceiling: listen: %w", err)
	}
	var ids atomic.Uint64
	// The server is set up as chargeauth's public one is (http/api/service.go).
	srv := &fasthttp.Server{
		Handler:            func(ctx *fasthttp.RequestCtx) { ceilingHandle(ctx, &ids) },
		Name:               "ceiling",
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
		return nil, fmt.Errorf("ceiling: shutdown: %w", err)
	}
	if err := <-serveErr; err != nil {
		return nil, fmt.Errorf("ceiling: serve: %w", err)
	}
	r := newReport("ceiling", res)
	r.Memory = &m
	return r, nil
}

// ceilingHandle parses and validates the body with session.ParseRequest and
// answers 202 with a small JSON body; anything else is a 400 or 405.
func ceilingHandle(ctx *fasthttp.RequestCtx, ids *atomic.Uint64) {
	if !ctx.IsPost() {
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
		return
	}
	if _, problems := session.ParseRequest(ctx.PostBody()); problems != nil {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"failed","error":` + strconv.Quote(session.JoinFieldErrors(problems)) + `}`)
		return
	}
	var buf [64]byte
	b := append(buf[:0], `{"status":"accepted","request_id":"`...)
	b = strconv.AppendUint(b, ids.Add(1), 10)
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
