package console

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// maxBulk bounds one "redeliver every failed one" action.
const maxBulk = 10000

// action is one operator action, as logged and as shown by the overview.
type action struct {
	At     time.Time `json:"at"`
	Who    string    `json:"who"`
	What   string    `json:"what"`
	Result string    `json:"result"`
	OK     bool      `json:"ok"`
}

// actionLog keeps the last actions in memory for the overview.
type actionLog struct {
	mu   sync.Mutex
	last []action
}

func (l *actionLog) add(a action) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = append(l.last, a)
	if len(l.last) > 20 {
		l.last = l.last[len(l.last)-20:]
	}
}

func (l *actionLog) recent() []action {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]action, len(l.last))
	for i, a := range l.last {
		out[len(l.last)-1-i] = a // newest first
	}
	return out
}

// record logs an action with who made it and keeps it for the overview.
func (c *Console) record(who, what, result string, ok bool) action {
	a := action{At: c.cfg.now().UTC(), Who: who, What: what, Result: result, OK: ok}
	c.actions.add(a)
	lvl := c.log.Info
	if !ok {
		lvl = c.log.Warn
	}
	lvl("console action", "who", who, "action", what, "result", result)
	return a
}

// api serves /console/api/<name>.
func (c *Console) api(ctx *fasthttp.RequestCtx, name string) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	who, ok := c.who(ctx)
	if !ok {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, "Bearer")
		writeError(ctx, fasthttp.StatusUnauthorized, "log in again: the console session is missing or expired")
		return
	}
	post := map[string]func(*fasthttp.RequestCtx, string){
		"redeliver":        c.redeliverOne,
		"redeliver-failed": c.redeliverFailed,
		"acl/reload":       c.reloadACL,
	}
	if name == "overview" {
		if !ctx.IsGet() {
			ctx.Response.Header.Set("Allow", "GET")
			writeError(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
			return
		}
		c.overview(ctx, who)
		return
	}
	h, found := post[name]
	switch {
	case !found:
		writeError(ctx, fasthttp.StatusNotFound, "no such endpoint")
	case !ctx.IsPost():
		ctx.Response.Header.Set("Allow", "POST")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
	case !fromPage(ctx):
		writeError(ctx, fasthttp.StatusForbidden, "missing X-Requested-With header")
	default:
		h(ctx, who)
	}
}

func (c *Console) redeliverOne(ctx *fasthttp.RequestCtx, who string) {
	var in struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(ctx.PostBody(), &in); err != nil || !session.IsUUID(in.ID) {
		writeError(ctx, fasthttp.StatusBadRequest, `the body must be {"id": "<request id>"}`)
		return
	}
	id := strings.ToLower(in.ID)
	what := "redeliver " + id
	rec, err := c.cfg.Redeliver(id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		a := c.record(who, what, "not found", false)
		writeJSON(ctx, fasthttp.StatusNotFound, map[string]any{"status": "failed", "error": "no session " + id, "action": a})
	case errors.Is(err, persistence.ErrWrongState):
		msg := "only a failed session can be redelivered; it is " + string(rec.State)
		a := c.record(who, what, msg, false)
		writeJSON(ctx, fasthttp.StatusConflict, map[string]any{"status": "failed", "error": msg, "action": a})
	case err != nil:
		a := c.record(who, what, err.Error(), false)
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"status": "failed", "error": err.Error(), "action": a})
	default:
		a := c.record(who, what, "scheduled again", true)
		writeJSON(ctx, fasthttp.StatusAccepted, map[string]any{"status": "redelivering", "state": rec.State, "action": a})
	}
}

// redeliverFailed redelivers every failed session accepted in a range.
// With dry_run it only counts them, for the confirmation; without, expect
// must be that count, so that the operator confirmed what is done: when
// more failed meanwhile, the answer is 409 with the new count.
func (c *Console) redeliverFailed(ctx *fasthttp.RequestCtx, who string) {
	var in struct {
		Since        time.Time `json:"since"`
		Until        time.Time `json:"until"`
		CallbackHost string    `json:"callback_host"`
		DryRun       bool      `json:"dry_run"`
		Expect       *int      `json:"expect"`
	}
	if err := json.Unmarshal(ctx.PostBody(), &in); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "the body must be JSON with since and until as RFC 3339 times: "+err.Error())
		return
	}
	if !in.DryRun && in.Expect == nil {
		writeError(ctx, fasthttp.StatusBadRequest, "expect (the count the operator confirmed) is required; ask with dry_run first")
		return
	}
	if !in.Since.IsZero() && !in.Until.IsZero() && !in.Since.Before(in.Until) {
		writeError(ctx, fasthttp.StatusBadRequest, "since must be before until")
		return
	}
	host := strings.ToLower(strings.TrimSpace(in.CallbackHost))
	ids, err := c.cfg.Failed(in.Since, in.Until, host, maxBulk)
	if err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	scope := describeRange(in.Since, in.Until, host)
	if in.DryRun {
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"count": len(ids), "scope": scope, "limit": maxBulk})
		return
	}
	if *in.Expect != len(ids) {
		writeJSON(ctx, fasthttp.StatusConflict, map[string]any{"status": "failed", "count": len(ids), "scope": scope,
			"error": "the count changed since the confirmation; confirm again"})
		return
	}
	done, skipped := 0, 0
	var firstErr error
	for _, id := range ids {
		_, err := c.cfg.Redeliver(id)
		switch {
		case err == nil:
			done++
		case errors.Is(err, persistence.ErrWrongState), errors.Is(err, persistence.ErrNotFound):
			skipped++ // redelivered or expired meanwhile
		default:
			firstErr = err
		}
		if firstErr != nil {
			break
		}
	}
	result := pluralize(done, "session") + " scheduled again"
	if skipped > 0 {
		result += ", " + pluralize(skipped, "session") + " no longer failed"
	}
	if firstErr != nil {
		result += "; stopped: " + firstErr.Error()
	}
	a := c.record(who, "redeliver failed "+scope, result, firstErr == nil)
	code := fasthttp.StatusAccepted
	if firstErr != nil {
		code = fasthttp.StatusServiceUnavailable
	}
	writeJSON(ctx, code, map[string]any{"redelivered": done, "skipped": skipped, "action": a})
}

func describeRange(since, until time.Time, host string) string {
	s := "accepted"
	switch {
	case since.IsZero() && until.IsZero():
		s += " at any time"
	case until.IsZero():
		s += " since " + since.UTC().Format(time.RFC3339)
	case since.IsZero():
		s += " before " + until.UTC().Format(time.RFC3339)
	default:
		s += " from " + since.UTC().Format(time.RFC3339) + " to " + until.UTC().Format(time.RFC3339)
	}
	if host != "" {
		s += " with callbacks to " + host
	}
	return s
}

func pluralize(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return itoa(n) + " " + word + "s"
}

func (c *Console) reloadACL(ctx *fasthttp.RequestCtx, who string) {
	if c.cfg.ReloadACL == nil {
		writeError(ctx, fasthttp.StatusConflict, "no ACL file to reload: the service runs with the built-in sample ACL or an external authorization service")
		return
	}
	if err := c.cfg.ReloadACL(); err != nil {
		a := c.record(who, "reload ACL", "failed, the loaded ACL stays: "+err.Error(), false)
		writeJSON(ctx, fasthttp.StatusUnprocessableEntity, map[string]any{"status": "failed", "error": a.Result, "action": a})
		return
	}
	result := "reloaded"
	if st, ok := c.sampler.aclNow(); ok {
		result += ": version " + st.Version + ", " + pluralize(int(st.Entries), "entry")
		result = strings.Replace(result, "entrys", "entries", 1)
	}
	a := c.record(who, "reload ACL", result, true)
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "reloaded", "action": a})
}

func writeJSON(ctx *fasthttp.RequestCtx, code int, v any) {
	body, _ := json.Marshal(v)
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
