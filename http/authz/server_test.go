package authz

import (
	"github.com/valyala/fasthttp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/session"
)

func TestAuthorizeOutcomes(t *testing.T) {
	var logs logBuffer
	_, url := startServer(t, Config{Logger: debugLogger(&logs)})
	c := mustClient(t, url)
	tests := []struct {
		name, station, token string
		want                 session.Status
		reason               string
	}{
		{"allowed", station, "validDriverToken1234567", session.StatusAllowed, ""},
		{"allowed at its station, upper case", strings.ToUpper(station), "stationBoundToken123456", session.StatusAllowed, ""},
		{"blocked", station, "blockedDriverToken12345", session.StatusNotAllowed, acl.ReasonBlocked},
		{"expired", station, "expiredDriverToken12345", session.StatusNotAllowed, acl.ReasonExpired},
		{"other station", otherStation, "stationBoundToken123456", session.StatusNotAllowed, acl.ReasonNotAtThisStation},
		{"unknown token", station, "neverHeardOfThisToken1", session.StatusInvalid, acl.ReasonUnknownToken},
		{"needs escaping", station, `quote"back\slash` + "\x01", session.StatusInvalid, acl.ReasonUnknownToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason, err := c.Authorize(time.Now().Add(2*time.Second), tt.station, tt.token)
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			if got != tt.want || reason != tt.reason {
				t.Errorf("Authorize(%q, %q) = %q, %q; want %q, %q", tt.station, tt.token, got, reason, tt.want, tt.reason)
			}
		})
	}
	out := logs.String()
	if !strings.Contains(out, `"driver_token":"vali****"`) {
		t.Errorf("no masked token in the debug log:\n%s", out)
	}
	for _, tt := range tests {
		if strings.Contains(out, tt.token) {
			t.Errorf("log holds the full token %q", tt.token)
		}
	}
}

// An ACL never says "unknown"; a service that does has answered.
func TestClientUnknownIsAnAnswer(t *testing.T) {
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(`{"status":"unknown","reason":"acl_reloading"}`)
	})
	got, reason, err := mustClient(t, url).Authorize(time.Now().Add(time.Second), station, "validDriverToken1234567")
	if err != nil || got != session.StatusUnknown || reason != "acl_reloading" {
		t.Errorf("Authorize = %q, %q, %v; want unknown, acl_reloading, nil", got, reason, err)
	}
}

func TestAuthorizeBody(t *testing.T) {
	_, url := startServer(t, Config{})
	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"allowed", `{"station_id":"` + station + `","driver_token":"validDriverToken1234567"}`, 200, `{"status":"allowed"}`},
		{"with reason", `{"station_id":"` + station + `","driver_token":"blockedDriverToken12345","extra":1}`, 200, `{"status":"not_allowed","reason":"blocked"}`},
		{"empty", ``, 400, `{"status":"failed","error":"bad JSON: unexpected end of JSON input"}`},
		{"bad json", `{"station_id":`, 400, `{"status":"failed","error":"bad JSON: unexpected end of JSON input"}`},
		{"wrong type", `{"station_id":1,"driver_token":"validDriverToken1234567"}`, 400, `"error":"bad JSON: json: cannot unmarshal number`},
		{"missing both", `{}`, 400, `{"status":"failed","error":"station_id is required; driver_token is required"}`},
		{"missing station", `{"driver_token":"validDriverToken1234567"}`, 400, `{"status":"failed","error":"station_id is required"}`},
		{"missing token", `{"station_id":"` + station + `"}`, 400, `{"status":"failed","error":"driver_token is required"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := do(t, "POST", url+"/authorize", tt.body)
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Errorf("POST /authorize %s: %d %s; want %d %s", tt.body, code, body, tt.code, tt.want)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	_, url := startServer(t, Config{})
	tests := []struct {
		method, path string
		code         int
		allow, want  string
	}{
		{"GET", "/authorize", 405, "POST", `{"status":"failed","error":"method not allowed"}`},
		{"PUT", "/authorize", 405, "POST", `"status":"failed"`},
		{"GET", "/acl", 200, "", `{"version":"` + acl.Sample().Version() + `","entries":4}`},
		{"POST", "/acl", 405, "GET, HEAD", `"status":"failed"`},
		{"GET", "/healthz", 200, "", `{"status":"ok"}`},
		{"DELETE", "/healthz", 405, "GET, HEAD", `"status":"failed"`},
		{"GET", "/", 404, "", `{"status":"failed","error":"not found"}`},
		{"POST", "/authorize/", 404, "", `"status":"failed"`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			code, body, allow := do(t, tt.method, url+tt.path, "")
			if code != tt.code || allow != tt.allow || body != tt.want && !strings.Contains(body, tt.want) {
				t.Errorf("%s %s: %d Allow=%q %s; want %d Allow=%q %s", tt.method, tt.path, code, allow, body, tt.code, tt.allow, tt.want)
			}
		})
	}
}

func TestSetACL(t *testing.T) {
	s, url := startServer(t, Config{})
	c := mustClient(t, url)
	authorize := func() session.Status {
		t.Helper()
		st, _, err := c.Authorize(time.Now().Add(2*time.Second), station, "validDriverToken1234567")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if got := authorize(); got != session.StatusAllowed {
		t.Fatalf("before swap: %q", got)
	}
	next := mustParseACL(t, `{"entries":[{"driver_token":"validDriverToken1234567","status":"blocked"}]}`)
	s.SetACL(next)
	if got := authorize(); got != session.StatusNotAllowed {
		t.Errorf("after swap: %q; want not_allowed", got)
	}
	if _, body, _ := do(t, "GET", url+"/acl", ""); body != `{"version":"`+next.Version()+`","entries":1}` {
		t.Errorf("GET /acl after swap: %s", body)
	}
	s.SetACL(nil) // ignored
	if got := authorize(); got != session.StatusNotAllowed {
		t.Errorf("after SetACL(nil): %q; want not_allowed", got)
	}
}

// Many goroutines share one Client with fewer connections than callers;
// run with -race.
func TestClientConcurrent(t *testing.T) {
	_, url := startServer(t, Config{})
	c, err := NewClient(ClientConfig{URL: url, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			token := "validDriverToken1234567"
			want := session.StatusAllowed
			if i%2 == 1 {
				token, want = "blockedDriverToken12345", session.StatusNotAllowed
			}
			for range 20 {
				got, _, err := c.Authorize(time.Now().Add(5*time.Second), station, token)
				if err != nil || got != want {
					t.Errorf("Authorize(%s) = %q, %v; want %q", token, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestShutdownBeforeServe(t *testing.T) {
	s := NewServer(Config{})
	if err := s.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ln := listen(t)
	if err := s.Serve(ln); err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("listener still open after Serve on a shut-down Server")
	}
}

// Shutdown right after starting Serve must not leave Serve running.
func TestShutdownRacingServe(t *testing.T) {
	for range 20 {
		s := NewServer(Config{})
		ln := listen(t)
		done := make(chan error, 1)
		go func() { done <- s.Serve(ln) }()
		if err := s.Shutdown(); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Serve still running after Shutdown")
		}
	}
}
