package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

const sessionsUsage = "chargeauth sessions list|get <id>|redeliver <id>|redeliver --state failed [--since T] [flags]"

// sessions reads requests through the admin API of a running service, or
// from --data-dir (read-only) when the service is stopped.
func sessions(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError("%s", sessionsUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sessions "+sub, flag.ContinueOnError)
	adminURL := fs.String("admin-url", "http://127.0.0.1:8082", "admin API of the running service")
	dataDir := fs.String("data-dir", "", "read this store directly instead (the service must be stopped)")
	state := fs.String("state", "", "list: only this state (pending, decided, delivered, failed)")
	station := fs.String("station", "", "list: only this station id")
	since := fs.String("since", "", "list: only requests accepted since this RFC 3339 time or this long ago (e.g. 1h)")
	limit := fs.Int("limit", 20, "list: most records, newest first")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	// Accept "get <id> --json" as well as "get --json <id>".
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := parseFlags(fs, args, stderr, sessionsUsage); err != nil {
		return err
	}
	pos = append(pos, fs.Args()...)
	if *state != "" && !session.State(*state).Valid() {
		return usageError("--state %q: must be pending, decided, delivered or failed", *state)
	}
	if *limit < 1 || *limit > 10000 {
		return usageError("--limit %d: must be from 1 to 10000", *limit)
	}
	src := source(&adminSource{base: strings.TrimSuffix(*adminURL, "/")})
	if *dataDir != "" {
		store, err := persistence.Open(persistence.Config{Dir: *dataDir, ReadOnly: true})
		if err != nil {
			return fmt.Errorf("open %s (is the service still running?): %w", *dataDir, err)
		}
		defer store.Close()
		src = &storeSource{store: store}
	}
	var recs []map[string]any
	var err error
	switch sub {
	case "list":
		if len(pos) > 0 {
			return usageError("list takes no argument")
		}
		recs, err = src.list(listQuery{state: *state, station: *station, since: *since, limit: *limit})
	case "redeliver":
		if len(pos) == 0 && *state != "" {
			// Many: every request listed by --state failed [--station] [--since].
			if *state != string(session.StateFailed) {
				return usageError("redeliver --state: only failed requests can be redelivered")
			}
			list, err := src.list(listQuery{state: *state, station: *station, since: *since, limit: *limit})
			if err != nil {
				return err
			}
			for _, r := range list {
				rec, err := src.redeliver(fmt.Sprint(r["request_id"]))
				if err != nil {
					return fmt.Errorf("redeliver %v: %w", r["request_id"], err)
				}
				recs = append(recs, rec)
			}
			break
		}
		if len(pos) != 1 {
			return usageError("redeliver takes one request id, or --state failed [--since T] [--station ID] [--limit N]")
		}
		var rec map[string]any
		rec, err = src.redeliver(strings.ToLower(pos[0]))
		recs = []map[string]any{rec}
	case "get":
		if len(pos) != 1 {
			return usageError("%s takes one request id", sub)
		}
		var rec map[string]any
		rec, err = src.get(strings.ToLower(pos[0]))
		recs = []map[string]any{rec}
	default:
		return usageError("unknown sessions command %q: %s", sub, sessionsUsage)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST_ID\tSTATE\tSTATUS\tDECIDED_BY\tSTATION_ID\tACCEPTED_AT\tATTEMPTS")
	for _, r := range recs {
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v\n", r["request_id"], r["state"], orDash(r["status"]),
			orDash(r["decided_by"]), r["station_id"], r["accepted_at"], r["callback_attempts"])
	}
	return tw.Flush()
}

func orDash(v any) any {
	if v == nil || v == "" {
		return "-"
	}
	return v
}

type listQuery struct {
	state, station, since string
	limit                 int
}

type source interface {
	list(q listQuery) ([]map[string]any, error)
	get(id string) (map[string]any, error)
	redeliver(id string) (map[string]any, error)
}

type adminSource struct{ base string }

func (a *adminSource) do(method, path string) ([]byte, int, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(a.base + path)
	req.Header.SetMethod(method)
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		return nil, 0, fmt.Errorf("admin API %s: %w (is the service running? use --data-dir when it is stopped)", a.base, err)
	}
	return append([]byte(nil), resp.Body()...), resp.StatusCode(), nil
}

func (a *adminSource) list(lq listQuery) ([]map[string]any, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": lq.state, "station_id": lq.station, "since": lq.since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("limit", fmt.Sprint(lq.limit))
	body, code, err := a.do("GET", "/sessions?"+q.Encode())
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("admin API: %d %s", code, body)
	}
	var out struct {
		Sessions []map[string]any `json:"sessions"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	return out.Sessions, nil
}

func (a *adminSource) one(method, path string) (map[string]any, error) {
	body, code, err := a.do(method, path)
	if err != nil {
		return nil, err
	}
	if code/100 != 2 {
		return nil, fmt.Errorf("admin API: %d %s", code, body)
	}
	var rec map[string]any
	if err := json.Unmarshal(body, &rec); err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	return rec, nil
}

func (a *adminSource) get(id string) (map[string]any, error) { return a.one("GET", "/sessions/"+id) }

func (a *adminSource) redeliver(id string) (map[string]any, error) {
	return a.one("POST", "/sessions/"+id+"/redeliver")
}

type storeSource struct{ store *persistence.Store }

func toMap(rec session.Record) map[string]any {
	rec.DriverToken = session.MaskToken(rec.DriverToken)
	b, _ := json.Marshal(rec)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func (s *storeSource) list(q listQuery) ([]map[string]any, error) {
	var since time.Time
	if q.since != "" {
		if t, err := time.Parse(time.RFC3339Nano, q.since); err == nil {
			since = t
		} else if d, err := time.ParseDuration(q.since); err == nil && d >= 0 {
			since = time.Now().Add(-d)
		} else {
			return nil, usageError("--since %q: must be an RFC 3339 time or a duration such as 1h", q.since)
		}
	}
	var out []map[string]any
	before := ""
	for len(out) < q.limit {
		recs, err := s.store.List(session.State(q.state), before, 500)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			before = r.ID
			if !since.IsZero() && r.AcceptedAt.Before(since) {
				return out, nil
			}
			if q.station != "" && !strings.EqualFold(r.StationID, q.station) {
				continue
			}
			if out = append(out, toMap(r)); len(out) == q.limit {
				return out, nil
			}
		}
		if len(recs) < 500 {
			break
		}
	}
	return out, nil
}

func (s *storeSource) get(id string) (map[string]any, error) {
	rec, err := s.store.Get(id)
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, fmt.Errorf("request %s not found", id)
	}
	if err != nil {
		return nil, err
	}
	return toMap(rec), nil
}

func (s *storeSource) redeliver(string) (map[string]any, error) {
	return nil, usageError("redeliver needs the running service (drop --data-dir)")
}
