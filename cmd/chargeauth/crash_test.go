package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sinkRecorder is a real callback receiver: statuses by webhook-id, with an
// optional delay per callback (a slow receiver).
type sinkRecorder struct {
	delay time.Duration
	mu    sync.Mutex
	got   map[string][]string
	n     atomic.Int64
}

func (s *sinkRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Status string `json:"status"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	time.Sleep(s.delay)
	s.mu.Lock()
	if s.got == nil {
		s.got = map[string][]string{}
	}
	id := r.Header.Get("webhook-id")
	s.got[id] = append(s.got[id], body.Status)
	s.mu.Unlock()
	s.n.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// waitAll polls until every id has a callback, failing after timeout.
func (s *sinkRecorder) waitAll(t *testing.T, ids []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, id := range ids {
		for len(s.statuses(id)) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("request %s was acknowledged but never called back", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (s *sinkRecorder) statuses(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got[id]...)
}

// An acknowledged request survives SIGKILL at any moment: after a restart
// on the same data directory every 202 gets exactly one decision and a
// callback carrying it, and no webhook-id is ever delivered with two
// different statuses.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	for _, tc := range []struct {
		name      string
		sinkDelay time.Duration
		// kill reports when to SIGKILL the first run.
		kill func(acked int, sink *sinkRecorder) bool
		// killResume also kills the second run as soon as it starts
		// resuming, before it can finish.
		killResume bool
	}{
		{name: "under load", kill: func(acked int, _ *sinkRecorder) bool { return acked >= 500 }},
		{name: "while delivering to a slow sink", sinkDelay: 20 * time.Millisecond,
			kill: func(acked int, s *sinkRecorder) bool { return acked >= 500 && s.n.Load() >= 50 }},
		{name: "during the resume scan", killResume: true, kill: func(acked int, _ *sinkRecorder) bool { return acked >= 500 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			killTest(t, tc.sinkDelay, tc.kill, tc.killResume)
		})
	}
}

func killTest(t *testing.T, sinkDelay time.Duration, kill func(int, *sinkRecorder) bool, killResume bool) {
	var calls atomic.Int64
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(200 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "authorize") {
			fmt.Fprint(w, `{"status":"allowed"}`)
		}
	}))
	defer authz.Close()
	sink := &sinkRecorder{delay: sinkDelay}
	recv := httptest.NewServer(sink)
	defer recv.Close()

	dataDir := t.TempDir()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--authz-url", authz.URL, "--allow-private-callbacks",
		"--decision-timeout", "30s", "--callback-backoff", "10ms", "--callback-max-backoff", "100ms"}
	p := start(t, args...)
	public := p.addr(t, "public listener")

	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"` + recv.URL + `/cb"}`
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	var next atomic.Int64
	var killed atomic.Bool
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= 2000 && !killed.Load() {
				resp, err := client.Post("http://"+public+"/charge_point/session/", "application/json", strings.NewReader(body))
				if err != nil {
					return // killed
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 202 {
					t.Errorf("POST: %d %s", resp.StatusCode, b)
					return
				}
				var ack struct {
					RequestID string `json:"request_id"`
				}
				if json.Unmarshal(b, &ack) != nil {
					continue
				}
				mu.Lock()
				acked = append(acked, ack.RequestID)
				n := len(acked)
				mu.Unlock()
				if kill(n, sink) && killed.CompareAndSwap(false, true) {
					_ = p.cmd.Process.Kill()
				}
			}
		}()
	}
	// The slow-sink case may need the callbacks to start flowing: wait for
	// the kill condition a bounded while after the load.
	wg.Wait()
	for deadline := time.Now().Add(20 * time.Second); !killed.Load() && time.Now().Before(deadline); {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if kill(n, sink) && killed.CompareAndSwap(false, true) {
			_ = p.cmd.Process.Kill()
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !killed.Load() {
		t.Fatal("the kill condition never held")
	}
	_ = p.cmd.Wait()
	<-p.done
	mu.Lock()
	ids := append([]string(nil), acked...)
	mu.Unlock()
	deliveredBefore := sink.n.Load()

	if killResume {
		// Kill the second run as soon as its admin listener is up: resume
		// runs right after it, before the public listener opens.
		p2 := start(t, args...)
		p2.addr(t, "admin listener")
		_ = p2.cmd.Process.Kill()
		_ = p2.cmd.Wait()
		<-p2.done
	}

	p3 := start(t, args...)
	admin := p3.addr(t, "admin listener")
	sink.waitAll(t, ids, 90*time.Second)
	for _, id := range ids {
		st := sink.statuses(id)
		for _, s := range st[1:] {
			if s != st[0] {
				t.Errorf("%s delivered with two statuses: %v", id, st)
			}
		}
		resp, err := http.Get("http://" + admin + "/sessions/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			State     string `json:"state"`
			Status    string `json:"status"`
			DecidedBy string `json:"decided_by"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&rec)
		resp.Body.Close()
		if rec.Status != st[0] || rec.DecidedBy == "" || (rec.State != "delivered" && rec.State != "decided") {
			t.Errorf("%s: stored %s/%s by %q, callback said %v", id, rec.State, rec.Status, rec.DecidedBy, st)
		}
	}
	t.Logf("%d acknowledged before SIGKILL, %d callbacks delivered before it; %d authz calls in all", len(ids), deliveredBefore, calls.Load())
}
