package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/chargeauth/chargeauth/http/api"
	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/session"
)

// loadOpenAPI loads and validates the embedded document.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi.yaml is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	return doc
}

// Documented ports of the two listeners, replaced by a test's own.
const (
	docPublic = "http://localhost:8080"
	docAdmin  = "http://127.0.0.1:8082"
)

// apiChecker sends requests to a running service and validates each
// request and its answer against the document; it records which operation
// answered which status.
type apiChecker struct {
	t      *testing.T
	doc    *openapi3.T
	router routers.Router

	mu      sync.Mutex
	covered map[string]bool // "operationId status"
}

func newAPIChecker(t *testing.T, covered map[string]bool, svcs ...*node.Node) *apiChecker {
	t.Helper()
	doc := loadOpenAPI(t)
	// Route the document's servers to these services (all of them, so one
	// router serves requests to any).
	retarget := func(in openapi3.Servers) openapi3.Servers {
		var out openapi3.Servers
		for _, s := range in {
			for _, svc := range svcs {
				url := map[string]string{docPublic: "http://" + svc.Addr(), docAdmin: "http://" + svc.AdminAddr()}[s.URL]
				if url == "" {
					t.Fatalf("server %q in the document is neither %s nor %s", s.URL, docPublic, docAdmin)
				}
				out = append(out, &openapi3.Server{URL: url})
			}
		}
		return out
	}
	doc.Servers = retarget(doc.Servers)
	for _, p := range doc.Paths.Map() {
		if len(p.Servers) == 0 {
			t.Fatal("every path names its listener in servers")
		}
		p.Servers = retarget(p.Servers)
	}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &apiChecker{t: t, doc: doc, router: r, covered: covered}
}

// Whether the document must accept the request: the server rejects some
// requests the document rejects too (a bad field), and some it cannot
// describe (a body over 16 KiB).
type reqValidity int

const (
	reqValid reqValidity = iota
	reqInvalid
	reqAny
)

type apiCall struct {
	method, url string
	header      map[string]string
	body        []byte
	want        int
	request     reqValidity
}

type apiAnswer struct {
	code   int
	header http.Header
	body   []byte
}

var validationOptions = &openapi3filter.Options{
	AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	IncludeResponseStatus: true,
	MultiError:            true,
}

func (c *apiChecker) do(call apiCall) apiAnswer {
	t := c.t
	t.Helper()
	newReq := func() *http.Request {
		req, err := http.NewRequest(call.method, call.url, bytes.NewReader(call.body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range call.header {
			req.Header.Set(k, v)
		}
		return req
	}
	resp, err := http.DefaultClient.Do(newReq())
	if err != nil {
		t.Fatalf("%s %s: %v", call.method, call.url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != call.want {
		t.Fatalf("%s %s: %d %s, want %d", call.method, call.url, resp.StatusCode, body, call.want)
	}

	vreq := newReq()
	route, params, err := c.router.FindRoute(vreq)
	if err != nil {
		t.Fatalf("%s %s: the document has no such operation: %v", call.method, call.url, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: validationOptions}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case call.request == reqValid && err != nil:
		t.Errorf("%s %s: the document rejects a request the server took: %v", call.method, call.url, err)
	case call.request == reqInvalid && err == nil:
		t.Errorf("%s %s: the document accepts a request the server rejected with %d", call.method, call.url, resp.StatusCode)
	}
	if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(body)), Options: validationOptions,
	}); err != nil {
		t.Errorf("%s %s: the %d answer does not match the document: %v\nbody: %s", call.method, call.url, resp.StatusCode, err, body)
	}
	c.mu.Lock()
	c.covered[fmt.Sprintf("%s %d", route.Operation.OperationID, resp.StatusCode)] = true
	c.mu.Unlock()
	return apiAnswer{code: resp.StatusCode, header: resp.Header, body: body}
}

// validateCallback checks a callback the receiver got against the
// document's sessionDecided webhook.
func (c *apiChecker) validateCallback(cb callback) error {
	hook := c.doc.Webhooks["sessionDecided"]
	if hook == nil || hook.Post == nil {
		c.t.Fatal("the document has no sessionDecided webhook")
	}
	req, err := http.NewRequest("POST", "http://receiver.example/cb", strings.NewReader(cb.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", cb.ContentType)
	req.Header.Set("webhook-id", cb.ID)
	req.Header.Set("webhook-timestamp", cb.Timestamp)
	if cb.Signature != "" {
		req.Header.Set("webhook-signature", cb.Signature)
	}
	route := &routers.Route{Spec: c.doc, Path: "sessionDecided", PathItem: hook, Method: "POST", Operation: hook.Post}
	return openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{Request: req, Route: route, Options: validationOptions})
}

// untriggered are the documented answers the test cannot cause, and why.
// Every other documented (operation, status) must be seen.
var untriggered = map[string]string{
	"getSession 503":                  "a read fails only while the store is closing or recovering",
	"listSessions 503":                "a read fails only while the store is closing or recovering",
	"getSessionRecord 503":            "a read fails only while the store is closing or recovering",
	"redeliverSession 503":            "a write fails only with a store fault (faults_test.go covers the 503 itself)",
	"openapi 401":                     "bearer authentication comes with the admin token change",
	"listSessions 401":                "bearer authentication comes with the admin token change",
	"listSessionsWrongMethod 401":     "bearer authentication comes with the admin token change",
	"getSessionRecord 401":            "bearer authentication comes with the admin token change",
	"redeliverSession 401":            "bearer authentication comes with the admin token change",
	"redeliverSessionWrongMethod 401": "bearer authentication comes with the admin token change",
}

// The running server and the OpenAPI document agree: every request the
// test can make, each answer, and the callbacks, are checked against the
// document, and every documented answer is seen (or listed in untriggered).
func TestOpenAPIMatchesServer(t *testing.T) {
	covered := map[string]bool{}
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	var refuse atomic.Bool
	recv.answer = func(int) int {
		if refuse.Load() {
			return 500
		}
		return 204
	}
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true, CallbackSecret: secret,
		CallbackMaxAttempts: 1})
	c := newAPIChecker(t, covered, svc)
	pub, admin := "http://"+svc.Addr(), "http://"+svc.AdminAddr()
	jsonCT := map[string]string{"Content-Type": "application/json"}

	// Public API.
	a := c.do(apiCall{method: "POST", url: pub + "/charge_point/session/", header: jsonCT, body: sessionBody(station, tokAllowed, recv.URL+"/cb"), want: 202})
	id := a.header.Get("Location")[len("/charge_point/session/"):]
	c.do(apiCall{method: "POST", url: pub + "/charge_point/session/", header: jsonCT, body: sessionBody("not-a-uuid", "short", "ftp://x"), want: 400, request: reqInvalid})
	c.do(apiCall{method: "POST", url: pub + "/charge_point/session/", header: jsonCT, body: []byte(`{"station_id":`), want: 400, request: reqInvalid})
	c.do(apiCall{method: "POST", url: pub + "/charge_point/session/", header: map[string]string{"Content-Type": "text/plain"}, body: sessionBody(station, tokAllowed, recv.URL+"/cb"), want: 415, request: reqInvalid})
	big := fmt.Sprintf(`{"station_id":%q,"driver_token":%q,"callback_url":%q,"pad":%q}`, station, tokAllowed, recv.URL, strings.Repeat("x", api.MaxBodySize))
	c.do(apiCall{method: "POST", url: pub + "/charge_point/session/", header: jsonCT, body: []byte(big), want: 413, request: reqAny})
	c.do(apiCall{method: "GET", url: pub + "/charge_point/session/", want: 405})
	c.do(apiCall{method: "GET", url: pub + "/charge_point/session/" + id, want: 200})
	c.do(apiCall{method: "GET", url: pub + "/charge_point/session/0190a5c4-0000-7000-8000-000000000000", want: 404})

	var cb callback
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		cbs := recv.byID(id)
		if len(cbs) == 0 {
			return errNoCallback
		}
		cb = cbs[0]
		return nil
	})
	if cb.Signature == "" {
		t.Fatal("no webhook-signature with a secret set")
	}
	if err := c.validateCallback(cb); err != nil {
		t.Errorf("the callback does not match the sessionDecided webhook: %v\n%+v", err, cb)
	}
	bad := cb
	bad.Body = strings.TrimSuffix(cb.Body, "}") + `,"extra":1}`
	if c.validateCallback(bad) == nil {
		t.Error("the webhook schema accepts a body with an extra key")
	}
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if rec, err := svc.Store().Get(id); err != nil || rec.State != session.StateDelivered {
			return fmt.Errorf("not delivered: %v %v", rec.State, err)
		}
		return nil
	})
	c.do(apiCall{method: "GET", url: pub + "/charge_point/session/" + id, want: 200}) // every field set

	// Admin API.
	c.do(apiCall{method: "GET", url: admin + "/healthz", want: 200})
	c.do(apiCall{method: "GET", url: admin + "/readyz", want: 200})
	c.do(apiCall{method: "GET", url: admin + "/metrics", want: 200})
	doc := c.do(apiCall{method: "GET", url: admin + "/openapi.yaml", want: 200})
	if !bytes.Equal(doc.body, api.OpenAPI) {
		t.Error("/openapi.yaml is not the embedded document")
	}
	c.do(apiCall{method: "GET", url: admin + "/sessions?state=delivered&limit=10", want: 200})
	c.do(apiCall{method: "GET", url: admin + "/sessions?state=lost", want: 400, request: reqInvalid})
	c.do(apiCall{method: "GET", url: admin + "/sessions?limit=0", want: 400, request: reqInvalid})
	c.do(apiCall{method: "POST", url: admin + "/sessions", want: 405})
	c.do(apiCall{method: "GET", url: admin + "/sessions/" + id, want: 200})
	c.do(apiCall{method: "GET", url: admin + "/sessions/0190a5c4-0000-7000-8000-000000000000", want: 404})
	c.do(apiCall{method: "POST", url: admin + "/sessions/" + id + "/redeliver", want: 409})
	c.do(apiCall{method: "POST", url: admin + "/sessions/0190a5c4-0000-7000-8000-000000000000/redeliver", want: 404})
	c.do(apiCall{method: "GET", url: admin + "/sessions/" + id + "/redeliver", want: 405})

	// A failed request, redelivered; its attempt keeps the answer.
	recv.mu.Lock()
	recv.body = `{"error":"down"}`
	recv.mu.Unlock()
	refuse.Store(true)
	failed := mustAccept(t, svc, tokNotAllowed, recv.URL+"/cb")
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if rec, err := svc.Store().Get(failed); err != nil || rec.State != session.StateFailed {
			return fmt.Errorf("not failed: %v %v", rec.State, err)
		}
		return nil
	})
	c.do(apiCall{method: "GET", url: admin + "/sessions/" + failed, want: 200}) // with a failed attempt
	c.do(apiCall{method: "GET", url: admin + "/sessions?state=failed", want: 200})
	refuse.Store(false)
	c.do(apiCall{method: "POST", url: admin + "/sessions/" + failed + "/redeliver", want: 202})

	// 503s: a full backlog, and a closing service's /readyz.
	slow := startFakeAuthz(t, time.Second)
	small := startService(t, node.Config{AuthzURL: slow.URL, DecisionTimeout: 5 * time.Second, MaxInflight: 1, MaxBacklog: 1})
	c2 := newAPIChecker(t, covered, small)
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatal("no 503 with a backlog of 1 after 10 requests")
		}
		r := do(t, "POST", "http://"+small.Addr()+"/charge_point/session/", "application/json", sessionBody(station, tokSlow, "http://127.0.0.1:9/cb"))
		if r.code == 503 {
			break
		}
	}
	c2.do(apiCall{method: "POST", url: "http://" + small.Addr() + "/charge_point/session/", header: jsonCT, body: sessionBody(station, tokSlow, "http://127.0.0.1:9/cb"), want: 503})
	closed := make(chan struct{})
	go func() { _ = small.Close(); close(closed) }()
	for seen := false; !seen; {
		select {
		case <-closed:
			t.Fatal("closed before /readyz answered 503")
		default:
		}
		resp, err := http.Get("http://" + small.AdminAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 503 {
			c2.do(apiCall{method: "GET", url: "http://" + small.AdminAddr() + "/readyz", want: 503})
			seen = true
		}
	}
	<-closed

	// Every documented answer was seen, or is listed as one the test
	// cannot cause.
	doc3 := loadOpenAPI(t)
	var missing []string
	for _, p := range doc3.Paths.Map() {
		for _, op := range p.Operations() {
			for status := range op.Responses.Map() {
				key := op.OperationID + " " + status
				if !covered[key] && untriggered[key] == "" {
					missing = append(missing, key)
				}
			}
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("documented answers no test saw: %v (seen: %v)", missing, slices.Sorted(maps.Keys(covered)))
	}
	for key := range untriggered {
		if covered[key] {
			t.Errorf("%s is listed as untriggered but was seen: remove it from untriggered", key)
		}
	}
}
