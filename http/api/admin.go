package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// admin serves the operator's endpoints on the admin listener.
type admin struct {
	svc     *Server
	metrics fasthttp.RequestHandler
}

func newAdmin(svc *Server, m *metrics) *admin {
	return &admin{
		svc:     svc,
		metrics: fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})),
	}
}

func (a *admin) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case path == "/healthz":
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
	case path == "/readyz":
		switch err := a.svc.readiness(); {
		case err == nil:
			writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ready"})
		case errors.Is(err, errNotStarted):
			writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		default:
			// The store cannot write (a failed write, under
			// --min-free-disk): take this node out of the load balancer.
			writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
		}
	case path == "/metrics":
		a.metrics(ctx)
	case path == "/openapi.yaml":
		serveOpenAPI(ctx)
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

// adminRecord is the admin view of a record: everything but the full
// token, plus its transitions in order (session.Record.Transitions).
type adminRecord struct {
	session.Record
	DriverToken string               `json:"driver_token"`
	Transitions []session.Transition `json:"transitions"`
}

func adminView(rec session.Record) adminRecord {
	return adminRecord{Record: rec, DriverToken: session.MaskToken(rec.DriverToken), Transitions: rec.Transitions()}
}

// list answers GET /sessions?state=&station_id=&since=&limit=&cursor=:
// newest first; next_cursor (when present) fetches the next page.
func (a *admin) list(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	var problems []session.FieldError
	state := session.State(args.Peek("state"))
	if state != "" && !state.Valid() {
		problems = append(problems, session.FieldError{Field: "state", Message: "state must be pending, decided, delivered or failed"})
	}
	station := strings.ToLower(string(args.Peek("station_id")))
	if station != "" && !session.IsUUID(station) {
		problems = append(problems, session.FieldError{Field: "station_id", Message: "station_id must be a UUID"})
	}
	var since time.Time
	if v := args.Peek("since"); len(v) > 0 {
		t, err := parseSince(string(v), a.svc.cfg.Now())
		if err != nil {
			problems = append(problems, session.FieldError{Field: "since", Message: err.Error()})
		}
		since = t
	}
	limit := 100
	if v := args.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > 10000 {
			problems = append(problems, session.FieldError{Field: "limit", Message: "limit must be an integer from 1 to 10000"})
		}
		limit = n
	}
	cursor := strings.ToLower(string(args.Peek("cursor")))
	if cursor == "" {
		cursor = strings.ToLower(string(args.Peek("before")))
	}
	if cursor != "" && !session.IsUUID(cursor) {
		problems = append(problems, session.FieldError{Field: "cursor", Message: "cursor must be a next_cursor from an earlier page"})
	}
	if problems != nil {
		writeFailed(ctx, failInvalid, problems)
		return
	}

	// Page through the store newest first, filtering, until the page is
	// full, the records are older than since, or the store is exhausted.
	// At most 100000 records are read for one page.
	out := make([]adminRecord, 0, min(limit, 1000))
	next, read := "", 0
	const page = 500
	for done := false; !done && len(out) < limit && read < 100000; {
		recs, err := a.svc.store.List(state, cursor, page)
		if err != nil {
			writeFailed(ctx, failClosing, nil)
			return
		}
		read += len(recs)
		if len(recs) < page {
			done = true
		}
		for _, r := range recs {
			cursor = r.ID
			if !since.IsZero() && r.AcceptedAt.Before(since) {
				done = true
				break
			}
			if station != "" && !strings.EqualFold(r.StationID, station) {
				continue
			}
			out = append(out, adminView(r))
			if len(out) == limit {
				next = r.ID
				break
			}
		}
	}
	if next == "" && read >= 100000 {
		next = cursor // the scan budget ran out: go on from here
	}
	body := map[string]any{"sessions": out, "count": len(out)}
	if next != "" {
		body["next_cursor"] = next
	}
	writeJSON(ctx, fasthttp.StatusOK, body)
}

// parseSince reads an RFC 3339 time or a duration before now ("1h").
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since must be an RFC 3339 time or a duration such as 1h")
}

func (a *admin) get(ctx *fasthttp.RequestCtx, id string) {
	rec, err := a.svc.store.Get(id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		if !a.svc.fwd.forward(ctx, id, "/sessions/"+id, true) {
			writeFailed(ctx, failNotFound, nil)
		}
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
