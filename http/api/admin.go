package api

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// admin serves the operator's endpoints on the admin listener.
type admin struct {
	svc     *Service
	ready   *atomic.Bool
	metrics fasthttp.RequestHandler
}

func newAdmin(svc *Service, m *metrics) *admin {
	return &admin{
		svc:     svc,
		ready:   &svc.ready,
		metrics: fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})),
	}
}

func (a *admin) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case path == "/healthz":
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
	case path == "/readyz":
		if a.ready.Load() {
			writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ready"})
		} else {
			writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		}
	case path == "/metrics":
		a.metrics(ctx)
	case path == "/sessions" || path == "/sessions/":
		if !ctx.IsGet() {
			writeFailed(ctx, failMethod, nil)
			ctx.Response.Header.Set("Allow", "GET")
			return
		}
		a.list(ctx)
	case strings.HasPrefix(path, "/sessions/"):
		rest := strings.TrimPrefix(path, "/sessions/")
		if id, ok := strings.CutSuffix(rest, "/redeliver"); ok {
			if !ctx.IsPost() {
				writeFailed(ctx, failMethod, nil)
				ctx.Response.Header.Set("Allow", "POST")
				return
			}
			a.redeliver(ctx, strings.ToLower(id))
			return
		}
		a.get(ctx, strings.ToLower(rest))
	default:
		writeFailed(ctx, failNoEndpoint, nil)
	}
}

// adminRecord is the admin view of a record: everything but the full token.
type adminRecord struct {
	session.Record
	DriverToken string `json:"driver_token"`
}

func adminView(rec session.Record) adminRecord {
	return adminRecord{Record: rec, DriverToken: session.MaskToken(rec.DriverToken)}
}

func (a *admin) list(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	state := session.State(args.Peek("state"))
	if state != "" && !state.Valid() {
		writeFailed(ctx, failInvalid, []session.FieldError{{Field: "state", Message: "state must be pending, decided, delivered or failed"}})
		return
	}
	limit := 100
	if v := args.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > 10000 {
			writeFailed(ctx, failInvalid, []session.FieldError{{Field: "limit", Message: "limit must be an integer from 1 to 10000"}})
			return
		}
		limit = n
	}
	recs, err := a.svc.store.List(state, strings.ToLower(string(args.Peek("before"))), limit)
	if err != nil {
		writeFailed(ctx, failClosing, nil)
		return
	}
	out := make([]adminRecord, len(recs))
	for i, r := range recs {
		out[i] = adminView(r)
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"sessions": out, "count": len(out)})
}

func (a *admin) get(ctx *fasthttp.RequestCtx, id string) {
	rec, err := a.svc.store.Get(id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		writeFailed(ctx, failNotFound, nil)
	case err != nil:
		writeFailed(ctx, failClosing, nil)
	default:
		writeJSON(ctx, fasthttp.StatusOK, adminView(rec))
	}
}

func (a *admin) redeliver(ctx *fasthttp.RequestCtx, id string) {
	rec, err := a.svc.Redeliver(id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		writeFailed(ctx, failNotFound, nil)
	case errors.Is(err, persistence.ErrWrongState):
		writeJSON(ctx, fasthttp.StatusConflict, map[string]string{"status": "failed", "error": "only a failed request can be redelivered; it is " + string(rec.State)})
	case err != nil:
		writeFailed(ctx, acceptFailure(err), nil)
	default:
		writeJSON(ctx, fasthttp.StatusAccepted, adminView(rec))
	}
}

func writeJSON(ctx *fasthttp.RequestCtx, code int, v any) {
	body, _ := json.Marshal(v)
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
