package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// MaxBodySize is the largest accepted request body.
const MaxBodySize = 16 << 10

const sessionPath = "/charge_point/session"

const ackMessage = "Request is being processed asynchronously. The result will be sent to the provided callback URL."

// front serves the public API.
type front struct {
	engine  *actors.Engine
	store   *persistence.Store
	metrics *metrics
	now     func() time.Time
	fwd     *forwarder
}

func (f *front) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	path = bytes.TrimSuffix(path, []byte("/"))
	switch {
	case string(path) == sessionPath:
		if !ctx.IsPost() {
			f.metrics.outcome("method_not_allowed")
			writeFailed(ctx, failMethod, nil)
			ctx.Response.Header.Set("Allow", "POST")
			return
		}
		f.accept(ctx)
	case bytes.HasPrefix(path, []byte(sessionPath+"/")):
		if !ctx.IsGet() && !ctx.IsHead() {
			writeFailed(ctx, failMethod, nil)
			ctx.Response.Header.Set("Allow", "GET, HEAD")
			return
		}
		f.get(ctx, string(path[len(sessionPath)+1:]))
	default:
		writeFailed(ctx, failNoEndpoint, nil)
	}
}

func (f *front) accept(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	defer func() { f.metrics.ack.Observe(time.Since(start).Seconds()) }()
	if ct := ctx.Request.Header.ContentType(); !isJSON(ct) {
		f.metrics.outcome("unsupported_media_type")
		writeFailed(ctx, failMediaType, nil)
		return
	}
	body := ctx.PostBody()
	if len(body) > MaxBodySize {
		f.metrics.outcome("too_large")
		writeFailed(ctx, failTooLarge, nil)
		return
	}
	req, problems := session.ParseRequest(body)
	if problems != nil {
		f.metrics.outcome("invalid")
		writeFailed(ctx, failInvalid, problems)
		return
	}
	rec, err := f.acceptWithKey(ctx, req)
	if errors.Is(err, errAnswered) {
		return
	}
	if err != nil {
		kind := acceptFailure(err)
		f.metrics.outcome("unavailable")
		writeFailed(ctx, kind, nil)
		return
	}
	f.metrics.outcome("accepted")

	secs := int(rec.DecideBy.Sub(f.now()).Seconds() + 0.999)
	h := &ctx.Response.Header
	h.SetContentType("application/json")
	// Header values and the body are built in one stack buffer (fasthttp
	// copies them): a string each would be an allocation per accept.
	var buf [256]byte
	b := append(append(append(buf[:0], sessionPath...), '/'), rec.ID...)
	h.SetBytesV("Location", b)
	h.SetBytesV("Retry-After", strconv.AppendInt(buf[:0], int64(max(secs, 0)), 10))
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	b = buf[:0]
	b = append(b, `{"status":"accepted","message":"`...)
	b = append(b, ackMessage...)
	b = append(b, `","request_id":"`...)
	b = append(b, rec.ID...)
	b = append(b, `","decide_by":"`...)
	b = rec.DecideBy.AppendFormat(b, timeFormat)
	b = append(b, `"}`...)
	ctx.Response.SetBody(b) // copies
}

// timeFormat is RFC 3339 with milliseconds, always UTC.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// statusView is the public view of a record: never the driver token.
type statusView struct {
	RequestID        string            `json:"request_id"`
	StationID        string            `json:"station_id"`
	State            session.State     `json:"state"`
	Status           session.Status    `json:"status,omitempty"`
	Reason           string            `json:"reason,omitempty"`
	DecidedBy        session.DecidedBy `json:"decided_by,omitempty"`
	AcceptedAt       string            `json:"accepted_at"`
	DecideBy         string            `json:"decide_by"`
	DecidedAt        string            `json:"decided_at,omitempty"`
	CallbackAttempts int               `json:"callback_attempts"`
	DeliveredAt      string            `json:"delivered_at,omitempty"`
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

func viewOf(rec session.Record) statusView {
	return statusView{
		RequestID:        rec.ID,
		StationID:        rec.StationID,
		State:            rec.State,
		Status:           rec.Status,
		Reason:           rec.Reason,
		DecidedBy:        rec.DecidedBy,
		AcceptedAt:       formatTime(rec.AcceptedAt),
		DecideBy:         formatTime(rec.DecideBy),
		DecidedAt:        formatTime(rec.DecidedAt),
		CallbackAttempts: rec.CallbackAttempts,
		DeliveredAt:      formatTime(rec.DeliveredAt),
	}
}

func (f *front) get(ctx *fasthttp.RequestCtx, id string) {
	if !session.IsUUID(id) {
		writeFailed(ctx, failNotFound, nil)
		return
	}
	id = strings.ToLower(id)
	rec, err := f.store.Get(id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		if !f.fwd.forward(ctx, id, sessionPath+"/"+id, false) {
			writeFailed(ctx, failNotFound, nil)
		}
		return
	case err != nil:
		writeFailed(ctx, failClosing, nil)
		return
	}
	body, _ := json.Marshal(viewOf(rec))
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// isJSON accepts application/json (with parameters such as charset) and
// any application/*+json type. A request with no Content-Type at all is
// taken as JSON.
func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	if len(ct) == 0 {
		return true
	}
	if bytes.EqualFold(ct, []byte("application/json")) {
		return true
	}
	return len(ct) > len("application/+json") &&
		bytes.EqualFold(ct[:len("application/")], []byte("application/")) &&
		bytes.EqualFold(ct[len(ct)-len("+json"):], []byte("+json"))
}
