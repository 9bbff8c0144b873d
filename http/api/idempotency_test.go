package api_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/node"
)

// postWithKey posts body with an Idempotency-Key.
func postWithKey(t *testing.T, url, key string, body []byte) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.Header.Set("Idempotency-Key", key)
	req.SetBody(body)
	if err := fasthttp.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for _, k := range resp.Header.PeekKeys() {
		h[strings.ToLower(string(k))] = string(resp.Header.PeekBytes(k))
	}
	return response{code: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: h}
}

// A POST repeated with its Idempotency-Key is answered as the first was
// (202, the same request_id, marked Idempotent-Replayed) and starts no
// second session: one callback. The same key with another body is a 422;
// a bad key a 400; without a key every POST is a new session.
func TestIdempotencyKey(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true})
	url := "http://" + svc.Addr() + "/charge_point/session/"
	body := sessionBody(station, tokAllowed, recv.URL+"/cb")

	first := postWithKey(t, url, "retry-me-1", body)
	if first.code != 202 || first.header["idempotent-replayed"] != "" {
		t.Fatalf("first POST: %d %v %s", first.code, first.header, first.body)
	}
	id := first.json(t)["request_id"]
	// The same request laid out differently is the same request.
	var m map[string]string
	_ = json.Unmarshal(body, &m)
	relaid := []byte(`{ "callback_url": "` + m["callback_url"] + `", "driver_token": "` + tokAllowed + `", "station_id": "` + station + `" }`)
	for _, b := range [][]byte{body, relaid} {
		again := postWithKey(t, url, "retry-me-1", b)
		if again.code != 202 || again.json(t)["request_id"] != id || again.header["idempotent-replayed"] != "true" ||
			again.header["location"] != first.header["location"] || again.json(t)["decide_by"] != first.json(t)["decide_by"] {
			t.Fatalf("repeated POST: %d %v %s; first %s", again.code, again.header, again.body, first.body)
		}
	}

	other := postWithKey(t, url, "retry-me-1", sessionBody(station, tokNotAllowed, recv.URL+"/cb"))
	if other.code != 422 || other.json(t)["status"] != "failed" || !strings.Contains(other.json(t)["error"].(string), "Idempotency-Key") {
		t.Fatalf("same key, other body: %d %s, want 422 in the failed shape", other.code, other.body)
	}
	for _, bad := range []string{strings.Repeat("k", 256), "tab\there", "é"} {
		r := postWithKey(t, url, bad, body)
		if r.code != 400 || !strings.Contains(string(r.body), "Idempotency-Key") {
			t.Errorf("key %q: %d %s, want 400", bad, r.code, r.body)
		}
	}
	if r := postWithKey(t, url, strings.Repeat("k", 255), body); r.code != 202 || r.json(t)["request_id"] == id {
		t.Errorf("a 255-character key: %d %s, want a new 202", r.code, r.body)
	}

	eventually(t, 5e9, 1e7, func() error {
		if len(recv.byID(id.(string))) == 0 {
			return errNoCallback
		}
		return nil
	})
	// Concurrent retries of one key: one session.
	var wg sync.WaitGroup
	ids := make([]any, 16)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = postWithKey(t, url, "burst-key", body).json(t)["request_id"]
		}()
	}
	wg.Wait()
	for _, got := range ids {
		if got != ids[0] || got == nil {
			t.Fatalf("concurrent POSTs with one key answered %v", ids)
		}
	}
	eventually(t, 5e9, 1e7, func() error {
		if len(recv.byID(ids[0].(string))) == 0 {
			return errNoCallback
		}
		return nil
	})
	if n := len(recv.byID(id.(string))); n != 1 {
		t.Errorf("%d callbacks for the repeated request, want 1", n)
	}
	eventually(t, 5e9, 1e7, func() error {
		if n := recv.count(); n != 3 {
			return errorString("callbacks in all: want 3 (first key, 255-character key, burst key)")
		}
		return nil
	})
}
