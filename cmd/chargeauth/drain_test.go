package main

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM: /readyz answers 503 at once while the node still accepts
// requests (202) for --drain-delay; then it stops and exits 0. A second
// signal ends the drain early.
func TestDrainOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	for _, tc := range []struct {
		name         string
		secondSignal bool
	}{{"drains for the delay", false}, {"a second signal ends the drain", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const delay = 3 * time.Second
			drainDelay := delay.String()
			if tc.secondSignal {
				drainDelay = "10m"
			}
			p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0",
				"--data-dir", t.TempDir(), "--drain-delay", drainDelay)
			public, admin := p.addr(t, "public listener"), p.addr(t, "admin listener")
			if code := status(t, "GET", "http://"+admin+"/readyz"); code != 200 {
				t.Fatalf("/readyz before SIGTERM: %d", code)
			}
			sent := time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// /readyz turns 503 ...
			waitFor(t, 2*time.Second, "/readyz to turn 503 after SIGTERM", func() bool {
				return status(t, "GET", "http://"+admin+"/readyz") == 503
			})
			// ... while requests are still served.
			if code := status(t, "POST", "http://"+public+"/charge_point/session/"); code != 202 {
				t.Fatalf("POST during the drain: %d, want 202", code)
			}
			if time.Since(sent) >= delay {
				t.Fatalf("the checks took %v, longer than the drain: the test proves nothing", time.Since(sent))
			}
			if tc.secondSignal {
				if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			<-p.done
			if err := p.cmd.Wait(); err != nil {
				t.Fatalf("exit: %v, want 0", err)
			}
			took := time.Since(sent)
			if !tc.secondSignal && took < delay {
				t.Errorf("exited %v after SIGTERM, before the %v drain", took, delay)
			}
			if tc.secondSignal && took > time.Minute {
				t.Errorf("exited %v after the second signal", took)
			}
		})
	}
}

// status sends one request (a valid session body for a POST) and returns
// the status code.
func status(t *testing.T, method, url string) int {
	t.Helper()
	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"http://127.0.0.1:1/cb"}`
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(fmt.Errorf("%s %s: %w", method, url, err))
	}
	resp.Body.Close()
	return resp.StatusCode
}
