package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM or SIGINT: the service stops taking requests, lets in-flight
// decisions and callbacks finish within --shutdown-grace, and exits 0. With
// a grace too short for them, it still exits 0 and the next start finishes
// the work.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	for _, tc := range []struct {
		name        string
		authzDelay  time.Duration
		grace       string
		finishFirst bool // all work done before exit
		signal      syscall.Signal
	}{
		{"in-flight work finishes", 500 * time.Millisecond, "5s", true, syscall.SIGTERM},
		{"unfinished work resumes", 3 * time.Second, "200ms", false, syscall.SIGTERM},
		{"SIGINT, in-flight work finishes", 500 * time.Millisecond, "5s", true, syscall.SIGINT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(tc.authzDelay):
				case <-r.Context().Done():
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"status":"not_allowed","reason":"blocked"}`)
			}))
			defer authz.Close()
			sink := &sinkRecorder{}
			recv := httptest.NewServer(sink)
			defer recv.Close()

			dataDir := t.TempDir()
			args := []string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
				"--data-dir", dataDir, "--authz-url", authz.URL, "--allow-private-callbacks",
				"--decision-timeout", "20s", "--shutdown-grace", tc.grace}
			p := start(t, args...)
			public := p.addr(t, "public listener")
			body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"` + recv.URL + `/cb"}`
			var ids []string
			for range 20 {
				resp, err := http.Post("http://"+public+"/charge_point/session/", "application/json", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var ack struct {
					RequestID string `json:"request_id"`
				}
				if resp.StatusCode != 202 || json.Unmarshal(b, &ack) != nil {
					t.Fatalf("POST: %d %s", resp.StatusCode, b)
				}
				ids = append(ids, ack.RequestID)
			}
			sent := time.Now()
			if err := p.cmd.Process.Signal(tc.signal); err != nil {
				t.Fatal(err)
			}
			<-p.done
			if err := p.cmd.Wait(); err != nil {
				t.Fatalf("exit after %v: %v, want 0", tc.signal, err)
			}
			took := time.Since(sent)
			delivered := 0
			for _, id := range ids {
				if len(sink.statuses(id)) > 0 {
					delivered++
				}
			}
			if tc.finishFirst && delivered != len(ids) {
				t.Fatalf("%d of %d callbacks delivered before exit, want all (exit took %v)", delivered, len(ids), took)
			}
			if !tc.finishFirst {
				if delivered != 0 {
					t.Fatalf("%d callbacks delivered within a 200ms grace and a 3s authz", delivered)
				}
				if took > 2*time.Second {
					t.Errorf("exit took %v with a 200ms grace", took)
				}
				// The next start finishes the work.
				p2 := start(t, args...)
				p2.addr(t, "public listener")
				sink.waitAll(t, ids, 30*time.Second)
			}
			for _, id := range ids {
				if st := sink.statuses(id); len(st) > 0 && st[0] != "not_allowed" {
					t.Errorf("%s: %v", id, st)
				}
			}
		})
	}
}

// The sink and the authorization service catch SIGTERM before their port
// opens: a supervisor that sends SIGTERM as soon as the port accepts (as a
// test or an orchestrator that probes it does) gets exit 0, not death by
// the signal. Each is stopped that way several times, as early as the
// port answers.
func TestSIGTERMAsSoonAsListeningExits0(t *testing.T) {
	for _, cmd := range []string{"sink", "authz"} {
		t.Run(cmd, func(t *testing.T) {
			for i := range 20 {
				addr := freeAddr(t)
				c := exec.Command(binary(t), cmd, "--listen", addr)
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				// Dial without pausing, and signal on the first connect: the
				// window between the listen and a late handler is
				// microseconds, which a poll every few milliseconds misses.
				deadline := time.Now().Add(30 * time.Second)
				for {
					conn, err := net.DialTimeout("tcp", addr, time.Second)
					if err == nil {
						_ = conn.Close()
						break
					}
					if time.Now().After(deadline) {
						_ = c.Process.Kill()
						t.Fatalf("%s never accepted on %s: %v", cmd, addr, err)
					}
				}
				if err := c.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				if err := c.Wait(); err != nil {
					t.Fatalf("run %d: SIGTERM as soon as %s listens: %v, want exit 0", i, cmd, err)
				}
			}
		})
	}
}
