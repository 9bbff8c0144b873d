package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/chargeauth/chargeauth/http/console"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// admin serves the operator's endpoints on the admin listener.
type admin struct {
	svc     *Server
	metrics fasthttp.RequestHandler
	console *console.Console
}

func newAdmin(svc *Server, m *metrics) (*admin, error) {
	cfg := &svc.cfg
	con, err := console.New(console.Config{
		Token: cfg.AdminToken, Gatherer: m.reg, Health: svc.readiness, Logger: cfg.Logger,
		Disk: cfg.DiskUsage, Redeliver: svc.Redeliver, ReloadACL: cfg.ReloadACL,
		Failed: func(since, until time.Time, host string, limit int) ([]string, error) {
			recs, _, err := svc.listSessions(listFilter{State: session.StateFailed, Since: since, Until: until, Host: host}, "", limit)
			ids := make([]string, len(recs))
			for i, r := range recs {
				ids[i] = r.ID
			}
			return ids, err
		},
	})
	if err != nil {
		return nil, err
	}
	return &admin{
		svc:     svc,
		metrics: fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})),
		console: con,
	}, nil
}

func (a *admin) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case console.Owns(path):
		a.console.Handle(ctx)
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

// list answers GET
// /sessions?state=&station_id=&callback_host=&since=&until=&limit=&cursor=:
// newest first; next_cursor (when present) fetches the next page. since and
// until bound accepted_at (since inclusive, until exclusive); callback_host
// matches the callback URL's host name, without the port, in any case.
func (a *admin) list(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	var problems []session.FieldError
	f := listFilter{State: session.State(args.Peek("state"))}
	if f.State != "" && !f.State.Valid() {
		problems = append(problems, session.FieldError{Field: "state", Message: "state must be pending, decided, delivered or failed"})
	}
	f.Station = strings.ToLower(string(args.Peek("station_id")))
	if f.Station != "" && !session.IsUUID(f.Station) {
		problems = append(problems, session.FieldError{Field: "station_id", Message: "station_id must be a UUID"})
	}
	f.Host = strings.ToLower(strings.TrimSpace(string(args.Peek("callback_host"))))
	if len(f.Host) > 253 {
		problems = append(problems, session.FieldError{Field: "callback_host", Message: "callback_host must be a host name of at most 253 characters"})
	}
	for _, b := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := args.Peek(b.name); len(v) > 0 {
			t, err := parseSince(string(v), a.svc.cfg.Now())
			if err != nil {
				problems = append(problems, session.FieldError{Field: b.name, Message: b.name + " must be an RFC 3339 time or a duration such as 1h"})
			}
			*b.to = t
		}
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
	recs, next, err := a.svc.listSessions(f, cursor, limit)
	if err != nil {
		writeFailed(ctx, failClosing, nil)
		return
	}
	out := make([]adminRecord, len(recs))
	for i, r := range recs {
		out[i] = adminView(r)
	}
	body := map[string]any{"sessions": out, "count": len(out)}
	if next != "" {
		body["next_cursor"] = next
	}
	writeJSON(ctx, fasthttp.StatusOK, body)
}

// listFilter selects records for the admin list (and the console's bulk
// redelivery); its zero value selects every record.
type listFilter struct {
	State        session.State
	Station      string    // lower case; "" for any
	Host         string    // the callback URL's host name, lower case; "" for any
	Since, Until time.Time // accepted_at in [Since, Until); zero for no bound
}

func (f *listFilter) match(r session.Record) bool {
	if !f.Until.IsZero() && !r.AcceptedAt.Before(f.Until) {
		return false
	}
	if f.Station != "" && !strings.EqualFold(r.StationID, f.Station) {
		return false
	}
	if f.Host != "" {
		u, err := url.Parse(r.CallbackURL)
		if err != nil || !strings.EqualFold(u.Hostname(), f.Host) {
			return false
		}
	}
	return true
}

// listSessions pages through the store newest first from cursor (an id;
// "" for the newest), filtering, until limit records matched, the records
// are older than f.Since, or the store is exhausted. At most 100000 records
// are read for one page; next is where the following page starts ("" when
// there is none).
func (s *Server) listSessions(f listFilter, cursor string, limit int) (out []session.Record, next string, err error) {
	out = make([]session.Record, 0, min(limit, 1000))
	read := 0
	const page = 500
	for done := false; !done && len(out) < limit && read < 100000; {
		recs, err := s.store.List(f.State, cursor, page)
		if err != nil {
			return nil, "", err
		}
		read += len(recs)
		if len(recs) < page {
			done = true
		}
		for _, r := range recs {
			cursor = r.ID
			if !f.Since.IsZero() && r.AcceptedAt.Before(f.Since) {
				done = true
				break
			}
			if !f.match(r) {
				continue
			}
			out = append(out, r)
			if len(out) == limit {
				next = r.ID
				break
			}
		}
	}
	if next == "" && read >= 100000 {
		next = cursor // the scan budget ran out: go on from here
	}
	return out, next, nil
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
		msg := "only a failed request can be redelivered; it is " + string(rec.State)
		writeJSON(ctx, fasthttp.StatusConflict, failedBody{Status: "failed", Error: msg,
			Errors: []session.FieldError{{Field: "state", Message: msg}}})
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
