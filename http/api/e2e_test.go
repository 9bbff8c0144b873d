package api_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// One callback of each of the four statuses, through real listeners, a real
// fake authorization service and a real receiver.
func TestEndToEndEachStatus(t *testing.T) {
	authz := startFakeAuthz(t, 700*time.Millisecond)
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: authz.URL, DecisionTimeout: 400 * time.Millisecond, AllowPrivateCallbacks: true})

	want := map[string]session.Status{
		tokAllowed:    session.StatusAllowed,
		tokNotAllowed: session.StatusNotAllowed,
		tokInvalid:    session.StatusInvalid,
		tokSlow:       session.StatusUnknown,
	}
	ids := map[string]string{}
	for token := range want {
		ids[token] = mustAccept(t, svc, token, recv.URL+"/cb?x=1")
	}
	// Before its decision (the slow one waits for its 400 ms deadline),
	// GET shows it pending, without a status.
	if r := do(t, "GET", "http://"+svc.Addr()+"/charge_point/session/"+ids[tokSlow], "", nil); r.code != 200 {
		t.Errorf("GET while pending: %d %s", r.code, r.body)
	} else if st := r.json(t); st["state"] != "pending" || st["status"] != nil || st["decided_by"] != nil {
		t.Errorf("GET while pending = %v, want state pending and no status yet", st)
	}
	for token, status := range want {
		id := ids[token]
		var cbs []callback
		eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
			if cbs = recv.byID(id); len(cbs) == 0 {
				return fmt.Errorf("no callback for %s yet", token)
			}
			return nil
		})
		cb := cbs[0]
		wantBody := fmt.Sprintf(`{"station_id":%q,"driver_token":%q,"status":%q}`, station, token, status)
		if cb.Body != wantBody {
			t.Errorf("%s: body %s, want %s", token, cb.Body, wantBody)
		}
		var keys map[string]any
		if err := json.Unmarshal([]byte(cb.Body), &keys); err != nil || len(keys) != 3 {
			t.Errorf("%s: body must have exactly three keys: %s", token, cb.Body)
		}
		if cb.ContentType != "application/json" {
			t.Errorf("%s: content type %q", token, cb.ContentType)
		}
		ts, err := strconv.ParseInt(cb.Timestamp, 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Errorf("%s: webhook-timestamp %q is not now in unix seconds", token, cb.Timestamp)
		}
		if cb.Signature != "" {
			t.Errorf("%s: signed without a secret: %q", token, cb.Signature)
		}

		// GET shows the decision, and never the token.
		var st map[string]any
		eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
			r := do(t, "GET", "http://"+svc.Addr()+"/charge_point/session/"+id, "", nil)
			if r.code != 200 {
				return fmt.Errorf("GET %d %s", r.code, r.body)
			}
			if strings.Contains(string(r.body), token) {
				t.Fatalf("GET shows the driver token: %s", r.body)
			}
			st = r.json(t)
			if st["state"] != "delivered" {
				return fmt.Errorf("state %v", st["state"])
			}
			return nil
		})
		wantBy := "authz"
		if status == session.StatusUnknown {
			wantBy = "timeout"
		}
		if st["status"] != string(status) || st["decided_by"] != wantBy || st["request_id"] != id || st["station_id"] != station {
			t.Errorf("%s: GET = %v", token, st)
		}
		for _, k := range []string{"accepted_at", "decide_by", "decided_at", "delivered_at"} {
			if _, err := time.Parse(time.RFC3339, fmt.Sprint(st[k])); err != nil {
				t.Errorf("%s: %s = %v: %v", token, k, st[k], err)
			}
		}
		if status == session.StatusUnknown && !strings.HasPrefix(fmt.Sprint(st["reason"]), "timeout") {
			t.Errorf("%s: reason %v, want it to say timeout", token, st["reason"])
		}
		if st["callback_attempts"] != float64(1) {
			t.Errorf("%s: callback_attempts %v", token, st["callback_attempts"])
		}
	}

	// The slow answer (allowed) arrives after the deadline decided unknown:
	// it changes nothing and sends no second callback.
	eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !authz.hasAnswered(tokSlow) {
			return fmt.Errorf("the slow fake has not answered yet")
		}
		return nil
	})
	// Nothing is left that could act on it: no request actor, no call, no
	// callback in flight.
	eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		e := svc.Engine()
		if live, calls, cbs := e.LiveRequests(), e.AuthzCallsInFlight(), e.CallbacksPending(); live+calls+cbs != 0 {
			return fmt.Errorf("%d request actors, %d authz calls, %d callbacks in flight", live, calls, cbs)
		}
		return nil
	})
	if cbs := recv.byID(ids[tokSlow]); len(cbs) != 1 {
		t.Errorf("%d callbacks for the slow request, want 1", len(cbs))
	}
	rec, err := svc.Store().Get(ids[tokSlow])
	if err != nil || rec.Status != session.StatusUnknown || rec.DecidedBy != session.ByTimeout {
		t.Errorf("slow request in the store: %+v %v", rec, err)
	}
	if recv.count() != 4 {
		t.Errorf("%d callbacks in all, want 4", recv.count())
	}
}

func TestAcknowledgment(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL, DecisionTimeout: 10 * time.Second})
	for _, path := range []string{"/charge_point/session/", "/charge_point/session"} {
		before := time.Now()
		r := do(t, "POST", "http://"+svc.Addr()+path, "application/json",
			[]byte(`{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"https://webhook.site/a02530e4-62e6-433b-ae31-d1392e823f12"}`))
		if r.code != 202 {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
		m := r.json(t)
		id, _ := m["request_id"].(string)
		if m["status"] != "accepted" || m["message"] != "Request is being processed asynchronously. The result will be sent to the provided callback URL." || len(m) != 4 {
			t.Errorf("body %s", r.body)
		}
		if len(id) != 36 || id[14] != '7' {
			t.Errorf("request_id %q is not a UUIDv7", id)
		}
		if r.header["location"] != "/charge_point/session/"+id {
			t.Errorf("Location %q", r.header["location"])
		}
		if ra, err := strconv.Atoi(r.header["retry-after"]); err != nil || ra < 9 || ra > 10 {
			t.Errorf("Retry-After %q, want the seconds to the deadline (10)", r.header["retry-after"])
		}
		decideBy, err := time.Parse(time.RFC3339, fmt.Sprint(m["decide_by"]))
		if err != nil || decideBy.Before(before.Add(9*time.Second)) || decideBy.After(time.Now().Add(10*time.Second)) {
			t.Errorf("decide_by %v: %v", m["decide_by"], err)
		}
		// 202 means durable: the record is in the store.
		if rec, err := svc.Store().Get(id); err != nil || rec.DriverToken != "validDriverToken1234567" {
			t.Errorf("accepted %s not in the store: %v", id, err)
		}
	}
}

// The earlier implementation's inputs, and every other way a body can be
// wrong: a 400 in the failed shape that names every problem, and nothing
// stored.
func TestValidationOverHTTP(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL})
	url := "http://" + svc.Addr() + "/charge_point/session/"
	const validURL = "https://webhook.site/a02530e4-62e6-433b-ae31-d1392e823f12"
	body := func(fields ...string) string {
		var parts []string
		for i := 0; i < len(fields); i += 2 {
			parts = append(parts, fmt.Sprintf("%q:%q", fields[i], fields[i+1]))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	for _, tc := range []struct {
		name   string
		body   string
		fields []string
	}{
		{"missing station_id", body("driver_token", "validDriverToken1234567", "callback_url", validURL), []string{"station_id"}},
		{"short station_id", body("station_id", "123e4567-e89b-12d3-a456-42661417400", "driver_token", "validDriverToken1234567", "callback_url", validURL), []string{"station_id"}},
		{"missing driver_token", body("station_id", station, "callback_url", validURL), []string{"driver_token"}},
		{"token valid", body("station_id", station, "driver_token", "valid", "callback_url", validURL), []string{"driver_token"}},
		{"token of 135", body("station_id", station, "driver_token", strings.Repeat("a", 135), "callback_url", validURL), []string{"driver_token"}},
		{"token with !", body("station_id", station, "driver_token", "validDriverToken1234567!", "callback_url", validURL), []string{"driver_token"}},
		{"missing callback_url", body("station_id", station, "driver_token", "validDriverToken1234567"), []string{"callback_url"}},
		{"relative callback_url", body("station_id", station, "driver_token", "validDriverToken1234567", "callback_url", "webhook.site/a02530e4"), []string{"callback_url"}},
		{"everything wrong", body("station_id", "x", "driver_token", "y", "callback_url", "z"), []string{"station_id", "driver_token", "callback_url"}},
		{"malformed JSON", `{"station_id":`, []string{"body"}},
		{"array", `[1,2]`, []string{"body"}},
		{"empty body", ``, []string{"body"}},
		{"null", `null`, []string{"body"}},
		{"wrong types", `{"station_id":1,"driver_token":true,"callback_url":null}`, []string{"station_id", "driver_token", "callback_url"}},
		{"non-UTF-8", "{\"station_id\":\"\xff\xfe\",\"driver_token\":\"validDriverToken1234567\",\"callback_url\":\"" + validURL + "\"}", []string{"body"}},
		{"duplicate key", `{"station_id":"` + station + `","station_id":"` + station + `","driver_token":"validDriverToken1234567","callback_url":"` + validURL + `"}`, []string{"station_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "POST", url, "application/json", []byte(tc.body))
			if r.code != 400 {
				t.Fatalf("%d %s, want 400", r.code, r.body)
			}
			var got struct {
				Status string               `json:"status"`
				Error  string               `json:"error"`
				Errors []session.FieldError `json:"errors"`
			}
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Status != "failed" || got.Error == "" {
				t.Errorf("body %s: want the failed shape", r.body)
			}
			var fields []string
			var msgs []string
			for _, e := range got.Errors {
				fields = append(fields, e.Field)
				msgs = append(msgs, e.Message)
			}
			if strings.Join(fields, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("fields %v, want %v (%s)", fields, tc.fields, r.body)
			}
			if got.Error != strings.Join(msgs, "; ") {
				t.Errorf("error %q is not the messages joined by '; '", got.Error)
			}
		})
	}
	if n := svc.Store().Count(session.StatePending) + svc.Store().Count(session.StateDecided) + svc.Store().Count(session.StateDelivered); n != 0 {
		t.Errorf("%d records stored after invalid requests, want 0", n)
	}
}

func TestHTTPErrors(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL})
	base := "http://" + svc.Addr()
	valid := sessionBody(station, tokAllowed, "https://example.com/cb")
	failed := func(t *testing.T, r response, code int) {
		t.Helper()
		if r.code != code {
			t.Fatalf("%d %s, want %d", r.code, r.body, code)
		}
		m := r.json(t)
		if m["status"] != "failed" || m["error"] == "" {
			t.Errorf("body %s: want the failed shape", r.body)
		}
	}
	for _, method := range []string{"GET", "PUT", "DELETE", "PATCH"} {
		r := do(t, method, base+"/charge_point/session/", "application/json", nil)
		failed(t, r, 405)
		if r.header["allow"] != "POST" {
			t.Errorf("%s: Allow %q", method, r.header["allow"])
		}
	}
	for _, method := range []string{"POST", "PUT", "DELETE"} {
		r := do(t, method, base+"/charge_point/session/0190aaaa-0000-7000-8000-000000000000", "application/json", nil)
		failed(t, r, 405)
		if r.header["allow"] != "GET, HEAD" {
			t.Errorf("%s on an id: Allow %q", method, r.header["allow"])
		}
	}
	failed(t, do(t, "POST", base+"/charge_point/session/", "text/plain", valid), 415)
	failed(t, do(t, "POST", base+"/charge_point/session/", "application/x-www-form-urlencoded", valid), 415)
	big := []byte(`{"station_id":"` + station + `","pad":"` + strings.Repeat("x", 17<<10) + `"}`)
	failed(t, do(t, "POST", base+"/charge_point/session/", "application/json", big), 413)
	failed(t, do(t, "GET", base+"/charge_point/session/0190aaaa-0000-7000-8000-000000000000", "", nil), 404)
	failed(t, do(t, "GET", base+"/charge_point/session/not-an-id", "", nil), 404)
	failed(t, do(t, "GET", base+"/elsewhere", "", nil), 404)
	// JSON with a charset, and a +json type, are JSON.
	if r := do(t, "POST", base+"/charge_point/session/", "application/json; charset=utf-8", valid); r.code != 202 {
		t.Errorf("charset: %d %s", r.code, r.body)
	}
	if r := do(t, "POST", base+"/charge_point/session/", "application/vnd.chargeauth+json", valid); r.code != 202 {
		t.Errorf("+json: %d %s", r.code, r.body)
	}
	if r := do(t, "POST", base+"/charge_point/session/", "", valid); r.code != 202 { // no Content-Type: read as JSON
		t.Errorf("no content type: %d %s", r.code, r.body)
	}
}

// When the store cannot take the request, the answer is 503 with
// Retry-After, never 202.
func TestUnavailableWhenStoreClosed(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: authz.URL})
	if err := svc.Store().Close(); err != nil {
		t.Fatal(err)
	}
	r := do(t, "POST", "http://"+svc.Addr()+"/charge_point/session/", "application/json", sessionBody(station, tokAllowed, "https://example.com/cb"))
	if r.code != 503 || r.header["retry-after"] == "" {
		t.Fatalf("%d (Retry-After %q) %s, want 503 with Retry-After", r.code, r.header["retry-after"], r.body)
	}
	if m := r.json(t); m["status"] != "failed" {
		t.Errorf("body %s", r.body)
	}
}

// Without --allow-private-callbacks, a callback to a loopback address is
// refused at connect time: the receiver gets nothing and the request fails
// with the reason.
func TestPrivateCallbackRefused(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: authz.URL, CallbackSchedule: schedule.Delays{0, time.Millisecond}})
	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		rec, err := svc.Store().Get(id)
		if err != nil {
			return err
		}
		if rec.State != session.StateFailed {
			return fmt.Errorf("state %s", rec.State)
		}
		if !strings.Contains(rec.LastError, "forbidden") {
			t.Errorf("last error %q should say the destination is forbidden", rec.LastError)
		}
		return nil
	})
	if n := recv.count(); n != 0 {
		t.Errorf("the private receiver got %d callbacks", n)
	}
}

func TestCallbackRetriedUntilDelivered(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	recv.answer = func(n int) int {
		if n < 3 {
			return 503
		}
		return 200
	}
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true,
		CallbackSchedule: schedule.Doubling(5*time.Millisecond, 20*time.Millisecond)})
	id := mustAccept(t, svc, tokNotAllowed, recv.URL+"/cb")
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		rec, err := svc.Store().Get(id)
		if err != nil {
			return err
		}
		if rec.State != session.StateDelivered {
			return fmt.Errorf("state %s", rec.State)
		}
		if rec.CallbackAttempts != 3 {
			t.Errorf("attempts %d, want 3", rec.CallbackAttempts)
		}
		return nil
	})
	cbs := recv.byID(id)
	if len(cbs) != 3 {
		t.Fatalf("%d callbacks, want 3", len(cbs))
	}
	for _, cb := range cbs[1:] {
		if cb.Body != cbs[0].Body || cb.ID != id {
			t.Errorf("a retry differs: %+v vs %+v", cb, cbs[0])
		}
	}
}

// Delivered records older than --retention are deleted in the background.
func TestRetention(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true, Retention: 300 * time.Millisecond})
	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(recv.byID(id)) == 0 {
			return fmt.Errorf("no callback yet")
		}
		return nil
	})
	eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		r := do(t, "GET", "http://"+svc.Addr()+"/charge_point/session/"+id, "", nil)
		if r.code != 404 {
			return fmt.Errorf("GET %d: still kept", r.code)
		}
		return nil
	})
	if n := svc.Store().Count(session.StateDelivered); n != 0 {
		t.Errorf("%d delivered records counted after retention", n)
	}
}
