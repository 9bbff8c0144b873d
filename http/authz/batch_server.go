package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// maxBatchItems is the most calls one POST /authorize/batch may carry; a
// longer batch is a 400.
const maxBatchItems = 1000

// parseBatch parses the body of POST /authorize/batch: a JSON array of
// {"station_id","driver_token"} objects, 1 to maxBatchItems of them, each
// with both fields. Its errors are fit for a 400 body: they name the
// item, never its values.
func parseBatch(body []byte) ([]authorizeRequest, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, errors.New("body must be a JSON array of {station_id, driver_token}")
	}
	var reqs []authorizeRequest
	if err := json.Unmarshal(body, &reqs); err != nil {
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	switch {
	case len(reqs) == 0:
		return nil, errors.New("batch is empty: at least one item is required")
	case len(reqs) > maxBatchItems:
		return nil, fmt.Errorf("batch of %d items: at most %d", len(reqs), maxBatchItems)
	}
	for i, r := range reqs {
		switch {
		case r.StationID == "" && r.DriverToken == "":
			return nil, fmt.Errorf("item %d: station_id is required; driver_token is required", i)
		case r.StationID == "":
			return nil, fmt.Errorf("item %d: station_id is required", i)
		case r.DriverToken == "":
			return nil, fmt.Errorf("item %d: driver_token is required", i)
		}
	}
	return reqs, nil
}

// authorizeBatch answers POST /authorize/batch: the decisions of the items,
// in their order, by the rules of POST /authorize. One bad item makes the
// whole batch a 400, and nothing is decided.
func (s *Server) authorizeBatch(ctx *fasthttp.RequestCtx) {
	reqs, err := parseBatch(ctx.PostBody())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "", err.Error())
		return
	}
	a, now := s.acl.Load(), s.now()
	debug := s.log.Enabled(context.Background(), slog.LevelDebug)
	ctx.SetContentType("application/json")
	out := make([]byte, 0, 32*len(reqs)+2)
	out = append(out, '[')
	for i, r := range reqs {
		status, reason := a.Decide(r.StationID, r.DriverToken, now)
		if debug {
			s.log.Debug("authz: decided",
				"station_id", r.StationID,
				"driver_token", session.MaskToken(r.DriverToken),
				"status", string(status),
				"reason", reason,
				"batch_item", i)
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = appendDecision(out, status, reason)
	}
	out = append(out, ']')
	ctx.Response.SetBodyRaw(out)
}

// appendDecision appends {"status":"...","reason":"..."} (reason omitted
// when empty). status and reason are constants from package acl: no
// escaping needed.
func appendDecision(b []byte, status session.Status, reason string) []byte {
	b = append(b, `{"status":"`...)
	b = append(b, status...)
	if reason != "" {
		b = append(b, `","reason":"`...)
		b = append(b, reason...)
	}
	return append(b, `"}`...)
}
