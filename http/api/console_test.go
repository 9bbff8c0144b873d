package api_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/node"
)

// consoleDo sends one request to the admin listener with the given headers
// ("Cookie", "X-Requested-With", ...) and body.
func consoleDo(t *testing.T, method, url string, headers map[string]string, body string) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod(method)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.SetBodyString(body)
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	h := map[string]string{}
	for _, k := range resp.Header.PeekKeys() {
		h[strings.ToLower(string(k))] = string(resp.Header.PeekBytes(k))
	}
	return response{code: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: h}
}

// consoleLogin posts the token to the login form and returns the session
// cookie ("name=value") and the Set-Cookie header.
func consoleLogin(t *testing.T, base, token string, extra map[string]string) (cookie, setCookie string) {
	t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for k, v := range extra {
		h[k] = v
	}
	r := consoleDo(t, "POST", base+"/console/login", h, "token="+url.QueryEscape(token))
	if r.code != 303 || r.header["location"] != "/console/" {
		t.Fatalf("login: %d location %q, want 303 to /console/", r.code, r.header["location"])
	}
	setCookie = r.header["set-cookie"]
	cookie, _, _ = strings.Cut(setCookie, ";")
	return cookie, setCookie
}

// With an admin token the console asks for a login; the cookie it sets is
// HttpOnly, SameSite=Strict, Secure behind TLS, holds no token, opens the
// console and the admin API's reads but not its writes, and ends at logout.
// Posts without X-Requested-With and logins from another site are refused.
func TestConsoleLogin(t *testing.T) {
	const token = "adminTokenForTheConsole-77a1"
	var logs syncBuffer
	az := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: az.URL, AdminToken: token, AllowPrivateCallbacks: true,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	id := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	base := "http://" + svc.AdminAddr()

	for path, want := range map[string]string{"/": "/console/", "/console": "/console/", "/console/": "/console/login"} {
		if r := consoleDo(t, "GET", base+path, nil, ""); r.code != 303 || r.header["location"] != want {
			t.Errorf("GET %s: %d to %q, want 303 to %s", path, r.code, r.header["location"], want)
		}
	}
	login := consoleDo(t, "GET", base+"/console/login", nil, "")
	if login.code != 200 || !strings.Contains(string(login.body), `name="token"`) ||
		!strings.Contains(login.header["content-security-policy"], "default-src 'self'") {
		t.Fatalf("login page: %d CSP %q", login.code, login.header["content-security-policy"])
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if r := consoleDo(t, "POST", base+"/console/login", form, "token=wrong"); r.code != 401 || r.header["set-cookie"] != "" ||
		!strings.Contains(string(r.body), "not the admin token") {
		t.Errorf("wrong token: %d set-cookie %q", r.code, r.header["set-cookie"])
	}
	crossSite := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"}
	if r := consoleDo(t, "POST", base+"/console/login", crossSite, "token="+token); r.code != 403 || r.header["set-cookie"] != "" {
		t.Errorf("login from another site: %d set-cookie %q, want 403 and no cookie", r.code, r.header["set-cookie"])
	}

	cookie, set := consoleLogin(t, base, token, nil)
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Max-Age=43200", "path=/"} {
		if !strings.Contains(strings.ToLower(set), strings.ToLower(want)) {
			t.Errorf("Set-Cookie %q lacks %s", set, want)
		}
	}
	if strings.Contains(strings.ToLower(set), "secure") || strings.Contains(set, token) {
		t.Errorf("Set-Cookie %q: Secure over plain HTTP, or the token itself", set)
	}
	if _, tls := consoleLogin(t, base, token, map[string]string{"X-Forwarded-Proto": "https"}); !strings.Contains(strings.ToLower(tls), "secure") {
		t.Errorf("Set-Cookie %q behind TLS: want Secure", tls)
	}

	withCookie := map[string]string{"Cookie": cookie}
	if r := consoleDo(t, "GET", base+"/console/", withCookie, ""); r.code != 200 || !strings.Contains(string(r.body), `src="/console/assets/app.js"`) {
		t.Errorf("GET /console/ with the cookie: %d", r.code)
	}
	if r := consoleDo(t, "GET", base+"/sessions/"+id, withCookie, ""); r.code != 200 {
		t.Errorf("GET /sessions/<id> with the cookie: %d %s", r.code, r.body)
	}
	if r := consoleDo(t, "POST", base+"/sessions/"+id+"/redeliver", map[string]string{"Cookie": cookie, "X-Requested-With": "x"}, ""); r.code != 401 {
		t.Errorf("POST /sessions/<id>/redeliver with the cookie: %d, want 401 (the cookie only reads)", r.code)
	}
	if r := consoleDo(t, "GET", base+"/console/api/overview", withCookie, ""); r.code != 200 || r.json(t)["who"] == "" {
		t.Errorf("overview with the cookie: %d %s", r.code, r.body)
	}
	if r := consoleDo(t, "POST", base+"/console/api/redeliver", withCookie, `{"id":"`+id+`"}`); r.code != 403 {
		t.Errorf("POST without X-Requested-With: %d, want 403", r.code)
	}
	if r := consoleDo(t, "POST", base+"/console/logout", withCookie, ""); r.code != 403 {
		t.Errorf("logout without X-Requested-With: %d, want 403", r.code)
	}
	if r := consoleDo(t, "POST", base+"/console/logout", map[string]string{"Cookie": cookie, "X-Requested-With": "x"}, ""); r.code != 200 ||
		!strings.Contains(r.header["set-cookie"], "max-age=0") && !strings.Contains(r.header["set-cookie"], "Max-Age=0") {
		t.Errorf("logout: %d set-cookie %q", r.code, r.header["set-cookie"])
	}
	if r := consoleDo(t, "GET", base+"/sessions", withCookie, ""); r.code != 401 {
		t.Errorf("GET /sessions with the cookie after logout: %d, want 401", r.code)
	}
	if r := consoleDo(t, "GET", base+"/console/", withCookie, ""); r.code != 303 {
		t.Errorf("GET /console/ after logout: %d, want 303 to the login", r.code)
	}
	if strings.Contains(logs.String(), token[:16]) || strings.Contains(logs.String(), strings.TrimPrefix(cookie, "chargeauth_console=")) {
		t.Error("the log has the admin token or a session cookie")
	}
	if !strings.Contains(logs.String(), `"msg":"console login"`) || !strings.Contains(logs.String(), `"msg":"console logout"`) {
		t.Error("login and logout are not logged")
	}
}

// Without an admin token the console is open, as the admin API is.
func TestConsoleOpenWithoutToken(t *testing.T) {
	az := startFakeAuthz(t, 0)
	svc := startService(t, node.Config{AuthzURL: az.URL})
	base := "http://" + svc.AdminAddr()
	if r := consoleDo(t, "GET", base+"/console/", nil, ""); r.code != 200 {
		t.Errorf("GET /console/: %d, want 200", r.code)
	}
	if r := consoleDo(t, "GET", base+"/console/login", nil, ""); r.code != 303 {
		t.Errorf("GET /console/login: %d, want 303 to the console", r.code)
	}
	if r := consoleDo(t, "GET", base+"/console/api/overview", nil, ""); r.code != 200 || r.json(t)["who"] != "open" {
		t.Errorf("overview: %d %s", r.code, r.body)
	}
	// Still no cross-site writes: a form cannot send X-Requested-With.
	if r := consoleDo(t, "POST", base+"/console/api/acl/reload", nil, ""); r.code != 403 {
		t.Errorf("POST without X-Requested-With: %d, want 403", r.code)
	}
}

// The admin list filters on until (exclusive) and on the callback URL's
// host name; bad values are a 400 naming the field.
func TestAdminListUntilAndHost(t *testing.T) {
	az := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	svc := startService(t, node.Config{AuthzURL: az.URL, AllowPrivateCallbacks: true})
	base := "http://" + svc.AdminAddr()
	local := strings.Replace(recv.URL, "127.0.0.1", "localhost", 1)
	a := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")
	b := mustAccept(t, svc, tokAllowed, local+"/cb")
	var mid time.Time
	eventually(t, 5*time.Second, 5*time.Millisecond, func() error { // a later accept gets a later accepted_at
		mid = time.Now().UTC()
		if !mid.After(acceptedAt(t, base, b)) {
			return errors.New("same instant")
		}
		return nil
	})
	c := mustAccept(t, svc, tokAllowed, recv.URL+"/cb")

	ids := func(query string) []string {
		t.Helper()
		r := doAuth(t, "GET", base+"/sessions?"+query, "")
		if r.code != 200 {
			t.Fatalf("GET /sessions?%s: %d %s", query, r.code, r.body)
		}
		var out struct {
			Sessions []struct {
				ID string `json:"request_id"`
			}
		}
		_ = json.Unmarshal(r.body, &out)
		var got []string
		for _, s := range out.Sessions {
			got = append(got, s.ID)
		}
		return got
	}
	for query, want := range map[string][]string{
		"callback_host=LOCALHOST":                                              {b},
		"callback_host=127.0.0.1":                                              {c, a},
		"until=" + url.QueryEscape(mid.Format(time.RFC3339Nano)):               {b, a},
		"since=" + url.QueryEscape(mid.Format(time.RFC3339Nano)) + "&until=1h": nil, // until before since
		"since=" + url.QueryEscape(mid.Format(time.RFC3339Nano)):               {c},
		"callback_host=example.com":                                            nil,
	} {
		if got := ids(query); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("GET /sessions?%s: %v, want %v", query, got, want)
		}
	}
	if r := doAuth(t, "GET", base+"/sessions?until=yesterday", ""); r.code != 400 || !strings.Contains(string(r.body), "until") {
		t.Errorf("bad until: %d %s", r.code, r.body)
	}
}

func acceptedAt(t *testing.T, base, id string) time.Time {
	t.Helper()
	r := doAuth(t, "GET", base+"/sessions/"+id, "")
	var rec struct {
		AcceptedAt time.Time `json:"accepted_at"`
	}
	if err := json.Unmarshal(r.body, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.AcceptedAt
}

// Redelivering every failed session from the console: a dry run counts
// them, the real run needs that count (409 with the new count otherwise),
// and the action is logged with who made it. The ACL reload calls the
// hook in Config and reports its error.
func TestConsoleActions(t *testing.T) {
	var logs syncBuffer
	recv := startReceiver(t)
	var failing atomic.Bool
	failing.Store(true)
	recv.answer = func(int) int {
		if failing.Load() {
			return 500
		}
		return 204
	}
	// The embedded authorization service, on an ACL file the console
	// reloads.
	aclPath := filepath.Join(t.TempDir(), "acl.json")
	writeACL := func(body string) {
		t.Helper()
		if err := os.WriteFile(aclPath, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeACL(`{"entries":[{"driver_token":"` + tokAllowed + `","status":"active"},{"driver_token":"` + tokNotAllowed + `","status":"blocked"}]}`)
	fs := vfs.NewMem()
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 5 << 30, TotalBytes: 20 << 30, UsedBytes: 15 << 30})
	svc := startService(t, node.Config{ACL: aclPath, AuthzListen: "127.0.0.1:0", AdminToken: "tok-for-actions-1234",
		AllowPrivateCallbacks: true, CallbackMaxAttempts: 1, FS: fs,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	base := "http://" + svc.AdminAddr()
	h := map[string]string{"Authorization": "Bearer tok-for-actions-1234", "X-Requested-With": "test"}
	var ids []string
	for range 3 {
		ids = append(ids, mustAccept(t, svc, tokAllowed, recv.URL+"/cb"))
	}
	delivered := mustAccept(t, svc, tokNotAllowed, strings.Replace(recv.URL, "127.0.0.1", "localhost", 1)+"/cb")
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		r := consoleDo(t, "GET", base+"/sessions?state=failed", h, "")
		if n := r.json(t)["count"]; n != float64(4) {
			return errors.New("not all failed yet")
		}
		return nil
	})
	failing.Store(false)

	// One by host: only the localhost one.
	r := consoleDo(t, "POST", base+"/console/api/redeliver-failed", h, `{"dry_run":true,"callback_host":"localhost"}`)
	if r.code != 200 || r.json(t)["count"] != float64(1) {
		t.Fatalf("dry run by host: %d %s", r.code, r.body)
	}
	r = consoleDo(t, "POST", base+"/console/api/redeliver", h, `{"id":"`+delivered+`"}`)
	if r.code != 202 {
		t.Fatalf("redeliver one: %d %s", r.code, r.body)
	}
	r = consoleDo(t, "POST", base+"/console/api/redeliver", h, `{"id":"`+delivered+`"}`)
	if r.code != 409 || !strings.Contains(string(r.body), "only a failed session") {
		t.Errorf("redeliver one again: %d %s, want 409", r.code, r.body)
	}
	r = consoleDo(t, "POST", base+"/console/api/redeliver-failed", h, `{"dry_run":true,"since":"`+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)+`"}`)
	if r.code != 200 || r.json(t)["count"] != float64(3) || !strings.Contains(r.json(t)["scope"].(string), "since") {
		t.Fatalf("dry run: %d %s, want 3", r.code, r.body)
	}
	if r := consoleDo(t, "POST", base+"/console/api/redeliver-failed", h, `{}`); r.code != 400 {
		t.Errorf("without expect: %d, want 400", r.code)
	}
	if r := consoleDo(t, "POST", base+"/console/api/redeliver-failed", h, `{"expect":2}`); r.code != 409 || r.json(t)["count"] != float64(3) {
		t.Errorf("with a stale count: %d %s, want 409 and the count", r.code, r.body)
	}
	r = consoleDo(t, "POST", base+"/console/api/redeliver-failed", h, `{"expect":3}`)
	if r.code != 202 || r.json(t)["redelivered"] != float64(3) {
		t.Fatalf("redeliver failed: %d %s", r.code, r.body)
	}
	eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, id := range append(ids, delivered) {
			if len(recv.byID(id)) < 2 {
				return errors.New("not redelivered yet")
			}
		}
		return nil
	})

	writeACL(`{"entries":[{"driver_token":"` + tokAllowed + `","status":"active"}]}`)
	if r := consoleDo(t, "POST", base+"/console/api/acl/reload", h, ""); r.code != 200 || svc.Authz().ACLStatus().Entries != 1 ||
		!strings.Contains(string(r.body), "1 entry") {
		t.Errorf("reload: %d %s, %d entries loaded", r.code, r.body, svc.Authz().ACLStatus().Entries)
	}
	writeACL(`{"entries":[{"driver_token":"short","status":"active"}]}`)
	if r := consoleDo(t, "POST", base+"/console/api/acl/reload", h, ""); r.code != 422 || !strings.Contains(string(r.body), "the loaded ACL stays") ||
		svc.Authz().ACLStatus().Entries != 1 {
		t.Errorf("failed reload: %d %s", r.code, r.body)
	}

	ov := consoleDo(t, "GET", base+"/console/api/overview", h, "")
	var o struct {
		Accepted float64            `json:"accepted_total"`
		Records  map[string]float64 `json:"records"`
		Store    struct {
			State string  `json:"state"`
			Free  float64 `json:"free_bytes"`
		} `json:"store"`
		Actions []struct{ Who, What, Result string }
	}
	if err := json.Unmarshal(ov.body, &o); err != nil {
		t.Fatal(err)
	}
	if o.Accepted != 4 || o.Records["failed"] != 0 || o.Store.State != "writable" || o.Store.Free != 5<<30 || len(o.Actions) != 5 {
		t.Errorf("overview: %s", ov.body)
	}
	if o.Actions[0].What != "reload ACL" || o.Actions[0].Who != "token" || !strings.Contains(o.Actions[2].Result, "3 sessions scheduled again") {
		t.Errorf("actions, newest first: %+v", o.Actions)
	}
	for _, want := range []string{`"who":"token","action":"redeliver failed accepted at any time","result":"3 sessions scheduled again"`,
		`"action":"redeliver ` + delivered + `"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line with %s", want)
		}
	}
}
