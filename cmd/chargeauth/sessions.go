package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

const sessionsHelp = `Usage: chargeauth sessions <command> [flags]

Commands:
  list                       list requests, newest first
  get <id>                   show one request
  redeliver <id>             send a failed request's callback again
  redeliver --state failed   send every failed request's callback again
                             (--since, --station narrow it; --limit caps it)

They go through the admin API of the running service (--admin-url), or,
for list and get, read a stopped service's --data-dir directly.

Variables (sessions reads no other; none of serve's):
  CHARGEAUTH_ADMIN_URL          --admin-url
  CHARGEAUTH_ADMIN_TOKEN        the admin token, sent as Authorization: Bearer
  CHARGEAUTH_ADMIN_TOKEN_FILE   --admin-token-file (set it or CHARGEAUTH_ADMIN_TOKEN, not both)

Run 'chargeauth sessions <command> -h' for the flags of a command.
`

// sessionsEnv: the sessions commands read only these variables. --data-dir
// has none on purpose: the store is read directly only when asked for on
// the command line, so a CHARGEAUTH_DATA_DIR exported for serve changes
// nothing here.
var sessionsEnv = onlyEnv(map[string]string{
	"admin-url":        envPrefix + "_ADMIN_URL",
	"admin-token-file": envPrefix + "_ADMIN_TOKEN_FILE",
})

const defaultAdminURL = "http://127.0.0.1:8082"

// sessions reads requests through the admin API of a running service, or
// from --data-dir (read-only) when the service is stopped.
func sessions(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("which one: sessions list, get or redeliver? (see 'chargeauth sessions -h')")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "-h", "--help", "-help", "help":
		return &helpShown{sessionsHelp}
	case "list", "get", "redeliver":
	default:
		return usageError("unknown command %q: list, get or redeliver (see 'chargeauth sessions -h')", sub)
	}
	fs := flag.NewFlagSet("sessions "+sub, flag.ContinueOnError)
	adminURL := fs.String("admin-url", defaultAdminURL, "admin API of the running service")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin token, sent as a bearer token (white space around it dropped); or $CHARGEAUTH_ADMIN_TOKEN, not both")
	var dataDir, state, station, since *string
	var limit *int
	if sub != "get" {
		state = fs.String("state", "", "only this state (pending, decided, delivered, failed)")
		station = fs.String("station", "", "only this station id")
		since = fs.String("since", "", "only requests accepted since this RFC 3339 time or this long ago (e.g. 1h)")
	}
	switch sub {
	case "list":
		limit = fs.Int("limit", 20, "most records, newest first (1 to 10000)")
	case "redeliver":
		limit = fs.Int("limit", 0, "with --state failed: most requests to redeliver, newest first (0: all)")
	}
	if sub != "redeliver" {
		dataDir = fs.String("data-dir", "", "read this store directly, read-only, instead of the admin API (the service must be stopped)")
	}
	asJSON := fs.Bool("json", false, "one JSON object per line")
	usageLine := map[string]string{
		"list":      "chargeauth sessions list [--state S] [--station ID] [--since 1h|RFC3339] [--limit N] [flags]",
		"get":       "chargeauth sessions get <id> [flags]",
		"redeliver": "chargeauth sessions redeliver <id> | --state failed [--since T] [--station ID] [--limit N] [flags]",
	}[sub]
	// Accept "get <id> --json" as well as "get --json <id>".
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := parseFlagsEnv(fs, args, usageLine, sessionsEnv); err != nil {
		return err
	}
	pos = append(pos, fs.Args()...)
	seeHelp := fmt.Sprintf("(see 'chargeauth sessions %s -h')", sub)
	if state != nil && *state != "" && !session.State(*state).Valid() {
		return usageError("--state %q: must be pending, decided, delivered or failed", *state)
	}
	if sub == "list" && (*limit < 1 || *limit > 10000) {
		return usageError("--limit %d: must be from 1 to 10000", *limit)
	}
	if sub == "redeliver" && *limit < 0 {
		return usageError("--limit %d: must be 0 (all) or more", *limit)
	}

	var src source
	if dataDir != nil && *dataDir != "" {
		// Pebble's own log lines (and ours) stay off the user's screen.
		store, err := persistence.Open(persistence.Config{Dir: *dataDir, ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
		var locked *persistence.LockedError
		if errors.As(err, &locked) {
			return usageError("%v: while it runs, drop --data-dir to go through its admin API (--admin-url or CHARGEAUTH_ADMIN_URL, now %s)",
				locked, *adminURL)
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", *dataDir, err)
		}
		defer store.Close()
		src = &storeSource{store: store}
	} else {
		token, err := adminToken(*tokenFile)
		if err != nil {
			return err
		}
		src = &adminSource{base: strings.TrimSuffix(*adminURL, "/"), token: token}
	}

	var recs []map[string]any
	var err error
	switch sub {
	case "list":
		if len(pos) > 0 {
			return usageError("list takes no argument %s", seeHelp)
		}
		recs, _, err = src.list(listQuery{state: *state, station: *station, since: *since, limit: *limit})
	case "redeliver":
		if len(pos) == 0 && *state != "" {
			if *state != string(session.StateFailed) {
				return usageError("redeliver --state: only failed requests can be redelivered")
			}
			return redeliverAll(src, listQuery{state: *state, station: *station, since: *since, limit: *limit}, *asJSON, stdout)
		}
		if len(pos) != 1 {
			return usageError("redeliver takes one request id, or --state failed %s", seeHelp)
		}
		var rec map[string]any
		rec, err = src.redeliver(strings.ToLower(pos[0]))
		recs = []map[string]any{rec}
	case "get":
		if len(pos) != 1 {
			return usageError("get takes one request id %s", seeHelp)
		}
		var rec map[string]any
		rec, err = src.get(strings.ToLower(pos[0]))
		recs = []map[string]any{rec}
	}
	if err != nil {
		return err
	}
	if sub == "get" && !*asJSON {
		return printRecord(stdout, recs[0])
	}
	return printRecords(stdout, recs, *asJSON)
}

// adminToken is the token the sessions commands send, read as serve reads
// its own: the content of --admin-token-file (or $CHARGEAUTH_ADMIN_TOKEN_FILE)
// or $CHARGEAUTH_ADMIN_TOKEN, surrounding white space dropped; both set is
// an error; neither is no token. Its value never appears in a message.
func adminToken(file string) (string, error) {
	token, from := strings.TrimSpace(os.Getenv(envPrefix+"_ADMIN_TOKEN")), "$"+envPrefix+"_ADMIN_TOKEN"
	if file != "" {
		if token != "" {
			return "", usageError("--admin-token-file and $%s_ADMIN_TOKEN are both set: set one", envPrefix)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usageError("--admin-token-file: %v", err)
		}
		token, from = strings.TrimSpace(string(b)), "--admin-token-file "+file
		if token == "" {
			return "", usageError("--admin-token-file %s is empty", file)
		}
	}
	for _, c := range token {
		if c < 0x21 || c > 0x7e {
			return "", usageError("the admin token from %s has a space or a character that cannot go in an HTTP header", from)
		}
	}
	return token, nil
}

func printRecords(w io.Writer, recs []map[string]any, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST_ID\tSTATE\tSTATUS\tDECIDED_BY\tSTATION_ID\tACCEPTED_AT\tATTEMPTS")
	for _, r := range recs {
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v\n", orDash(r["request_id"]), orDash(r["state"]), orDash(r["status"]),
			orDash(r["decided_by"]), orDash(r["station_id"]), orDash(r["accepted_at"]), orDash(r["callback_attempts"]))
	}
	return tw.Flush()
}

// errSomeFailed ends a bulk redeliver in which some request failed: exit 1.
var errSomeFailed = errors.New("some redeliveries failed")

// redeliverAll redelivers every request q matches, a page at a time (the
// admin API's cursor), going on past a request that fails, up to q.limit
// (0: all). It prints each redelivered record, then how many were
// redelivered and which failed, and returns an error if any failed.
func redeliverAll(src source, q listQuery, asJSON bool, stdout io.Writer) error {
	type failure struct {
		ID    string `json:"request_id"`
		Error string `json:"error"`
	}
	var done []map[string]any
	var failed []failure
	seen := 0
	var listErr error
	// Redelivered requests leave the failed index, and one that fails
	// again is newer than the cursor: the pages below the cursor are what
	// is left to do. The bound only stops a server whose cursor never moves.
	for cursor, pages := "", 0; pages < 1_000_000; pages++ {
		pq := q
		pq.cursor, pq.limit = cursor, 500
		if q.limit > 0 {
			pq.limit = min(500, q.limit-seen)
		}
		page, next, err := src.list(pq)
		if err != nil {
			listErr = err
			break
		}
		for _, r := range page {
			id := fmt.Sprint(r["request_id"])
			seen++
			rec, err := src.redeliver(id)
			if err != nil {
				failed = append(failed, failure{id, err.Error()})
				continue
			}
			done = append(done, rec)
		}
		if next == "" || next == cursor || (q.limit > 0 && seen >= q.limit) {
			break
		}
		cursor = next
	}
	if err := printRecords(stdout, done, asJSON); err != nil {
		return err
	}
	if asJSON {
		sum := struct {
			Redelivered int       `json:"redelivered"`
			Failed      []failure `json:"failed"`
			ListError   string    `json:"list_error,omitempty"`
		}{len(done), append([]failure{}, failed...), ""}
		if listErr != nil {
			sum.ListError = listErr.Error()
		}
		if err := json.NewEncoder(stdout).Encode(sum); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "redelivered %d of %d; %d failed\n", len(done), seen, len(failed))
		for _, f := range failed {
			fmt.Fprintf(stdout, "  %s: %s\n", f.ID, f.Error)
		}
	}
	switch {
	case listErr != nil:
		return fmt.Errorf("listing the failed requests stopped after %d: %w", seen, listErr)
	case len(failed) > 0:
		return fmt.Errorf("%w: %d of %d", errSomeFailed, len(failed), seen)
	}
	return nil
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
	cursor                string // the next_cursor of the page before
}

type source interface {
	// list returns one page and the cursor of the next ("" at the end).
	list(q listQuery) (page []map[string]any, next string, err error)
	get(id string) (map[string]any, error)
	redeliver(id string) (map[string]any, error)
}

type adminSource struct {
	base  string
	token string // sent as a bearer token when set
}

func (a *adminSource) do(method, path string) ([]byte, int, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(a.base + path)
	req.Header.SetMethod(method)
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		return nil, 0, fmt.Errorf("admin API %s: %w (is the service running? use --data-dir when it is stopped)", a.base, err)
	}
	body := append([]byte(nil), resp.Body()...)
	if code := resp.StatusCode(); code == fasthttp.StatusUnauthorized {
		hint := "set CHARGEAUTH_ADMIN_TOKEN or --admin-token-file"
		if a.token != "" {
			hint = "the admin token sent is not the service's"
		}
		return nil, 0, fmt.Errorf("admin API %s: 401 unauthorized: %s", a.base, hint)
	}
	return body, resp.StatusCode(), nil
}

func (a *adminSource) list(lq listQuery) ([]map[string]any, string, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": lq.state, "station_id": lq.station, "since": lq.since, "cursor": lq.cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("limit", fmt.Sprint(lq.limit))
	body, code, err := a.do("GET", "/sessions?"+q.Encode())
	if err != nil {
		return nil, "", err
	}
	if code != 200 {
		return nil, "", fmt.Errorf("admin API: %d %s", code, body)
	}
	var out struct {
		Sessions   []map[string]any `json:"sessions"`
		NextCursor string           `json:"next_cursor"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, "", fmt.Errorf("admin API: %w", err)
	}
	return out.Sessions, out.NextCursor, nil
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

func (a *adminSource) get(id string) (map[string]any, error) {
	return a.one("GET", "/sessions/"+url.PathEscape(id))
}

func (a *adminSource) redeliver(id string) (map[string]any, error) {
	return a.one("POST", "/sessions/"+url.PathEscape(id)+"/redeliver")
}

type storeSource struct{ store *persistence.Store }

// toMap is a record read from the store in the admin API's shape: the
// token masked, the transitions listed.
func toMap(rec session.Record) map[string]any {
	rec.DriverToken = session.MaskToken(rec.DriverToken)
	b, _ := json.Marshal(struct {
		session.Record
		Transitions []session.Transition `json:"transitions"`
	}{rec, rec.Transitions()})
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func (s *storeSource) list(q listQuery) ([]map[string]any, string, error) {
	var since time.Time
	if q.since != "" {
		if t, err := time.Parse(time.RFC3339Nano, q.since); err == nil {
			since = t
		} else if d, err := time.ParseDuration(q.since); err == nil && d >= 0 {
			since = time.Now().Add(-d)
		} else {
			return nil, "", usageError("--since %q: must be an RFC 3339 time or a duration such as 1h", q.since)
		}
	}
	var out []map[string]any
	before := q.cursor
	for len(out) < q.limit {
		recs, err := s.store.List(session.State(q.state), before, 500)
		if err != nil {
			return nil, "", err
		}
		for _, r := range recs {
			before = r.ID
			if !since.IsZero() && r.AcceptedAt.Before(since) {
				return out, "", nil
			}
			if q.station != "" && !strings.EqualFold(r.StationID, q.station) {
				continue
			}
			if out = append(out, toMap(r)); len(out) == q.limit {
				return out, r.ID, nil
			}
		}
		if len(recs) < 500 {
			break
		}
	}
	return out, "", nil
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

// recordOrder is the order of a record's fields in the human form of get;
// fields not named here follow in name order, so that a field the service
// adds is shown too.
var recordOrder = []string{"request_id", "state", "status", "reason", "decided_by", "station_id", "driver_token",
	"callback_url", "accepted_at", "decide_by", "decided_at", "callback_attempts", "next_attempt_at",
	"last_error", "delivered_at", "failed_at", "redelivered_at"}

// printRecord writes every field of one record, one per line, then its
// transitions and attempts, each with its time. Durations (fields ending
// in _ms) are in human units (350ms, 1.2s); text is quoted when it holds
// control characters.
func printRecord(w io.Writer, rec map[string]any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	shown := map[string]bool{}
	var lists []string
	field := func(k string) {
		v, ok := rec[k]
		if !ok || shown[k] {
			return
		}
		shown[k] = true
		if _, isList := v.([]any); isList {
			lists = append(lists, k)
			return
		}
		fmt.Fprintf(tw, "%s:\t%s\n", humanKey(k), humanValue(k, v))
	}
	for _, k := range recordOrder {
		field(k)
	}
	rest := make([]string, 0, len(rec))
	for k := range rec {
		rest = append(rest, k)
	}
	sort.Strings(rest)
	for _, k := range rest {
		field(k)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The story in order: transitions, then attempts, then any other list.
	sort.SliceStable(lists, func(a, b int) bool { return listRank(lists[a]) < listRank(lists[b]) })
	for _, k := range lists {
		items := rec[k].([]any)
		// Attempts are numbered over the request's life: the log keeps
		// the last ones, and a redelivery does not restart the count.
		first := 1
		if total, ok := rec["callback_attempts"].(float64); ok && k == "attempts" && int(total) > len(items) {
			first = int(total) - len(items) + 1
			fmt.Fprintf(w, "%s (last %d of %d):\n", k, len(items), int(total))
		} else {
			fmt.Fprintf(w, "%s (%d):\n", k, len(items))
		}
		for i, it := range items {
			i += first - 1
			m, ok := it.(map[string]any)
			if !ok {
				fmt.Fprintf(w, "  %d. %s\n", i+1, humanValue("", it))
				continue
			}
			// "at" (or "state" first, for transitions), then the rest in name order.
			var parts []string
			keys := make([]string, 0, len(m))
			for mk := range m {
				keys = append(keys, mk)
			}
			sort.Slice(keys, func(a, b int) bool {
				return itemRank(keys[a]) < itemRank(keys[b]) || itemRank(keys[a]) == itemRank(keys[b]) && keys[a] < keys[b]
			})
			for _, mk := range keys {
				if mk == "state" || mk == "at" {
					parts = append(parts, humanValue(mk, m[mk]))
					continue
				}
				parts = append(parts, humanKey(mk)+"="+humanValue(mk, m[mk]))
			}
			fmt.Fprintf(w, "  %d. %s\n", i+1, strings.Join(parts, "  "))
		}
	}
	return nil
}

func listRank(k string) int {
	switch k {
	case "transitions":
		return 0
	case "attempts":
		return 1
	}
	return 2
}

// humanKey drops the unit of a field whose value humanValue gives in
// human units: duration_ms=1234.5 is shown as duration=1.2s.
func humanKey(k string) string {
	if d, ok := strings.CutSuffix(k, "_ms"); ok {
		return d
	}
	return k
}

func itemRank(k string) int {
	switch k {
	case "state":
		return 0
	case "at":
		return 1
	}
	return 2
}

// humanValue is one value of the human form: a duration for a field
// ending in _ms, "-" for nothing, a quoted string if it holds control
// characters.
func humanValue(k string, v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case float64:
		if strings.HasSuffix(k, "_ms") {
			return humanMillis(x)
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		if x == "" {
			return "-"
		}
		if strings.ContainsFunc(x, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return strconv.Quote(x)
		}
		return x
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

// humanMillis writes a duration given in milliseconds in human units:
// 350µs, 350ms, 1.2s, 1m30s.
func humanMillis(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
