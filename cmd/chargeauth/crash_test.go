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

// sinkRecorder is a real callback receiver: statuses by webhook-id.
type sinkRecorder struct {
	mu  sync.Mutex
	got map[string][]string
}

func (s *sinkRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Status string `json:"status"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	s.mu.Lock()
	if s.got == nil {
		s.got = map[string][]string{}
	}
	id := r.Header.Get("webhook-id")
	s.got[id] = append(s.got[id], body.Status)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *sinkRecorder) statuses(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got[id]...)
}

// An acknowledged request survives SIGKILL: after a restart on the same
// data directory every 202 gets its decision and a callback, and no
// webhook-id is ever delivered with two different statuses.
func TestKill9Resume(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	var calls atomic.Int64
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"allowed"}`)
	}))
	defer authz.Close()
	sink := &sinkRecorder{}
	recv := httptest.NewServer(sink)
	defer recv.Close()

	dataDir := t.TempDir()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--authz-url", authz.URL, "--allow-private-callbacks",
		"--authz-concurrency", "4", "--decision-timeout", "5s", "--callback-backoff", "10ms"}
	p := start(t, args...)
	public := p.addr(t, "public listener")

	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"` + recv.URL + `/cb"}`
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	var next atomic.Int64
	killed := make(chan struct{})
	var killOnce sync.Once
	client := &http.Client{Timeout: 5 * time.Second}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= 400 {
				resp, err := client.Post("http://"+public+"/charge_point/session/", "application/json", strings.NewReader(body))
				if err != nil {
					return // killed
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 202 {
					continue
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
				if n >= 100 {
					killOnce.Do(func() { _ = p.cmd.Process.Kill(); close(killed) })
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatal("fewer than 100 acknowledgments before the load ended")
	}
	_ = p.cmd.Wait()
	<-p.done
	callsBefore := calls.Load()
	mu.Lock()
	ids := append([]string(nil), acked...)
	mu.Unlock()

	// Restart on the same data directory.
	p2 := start(t, args...)
	admin := p2.addr(t, "admin listener")
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range ids {
		for len(sink.statuses(id)) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("request %s acknowledged before the kill never got a callback", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
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
			State  string `json:"state"`
			Status string `json:"status"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&rec)
		resp.Body.Close()
		if rec.Status != st[0] || (rec.State != "delivered" && rec.State != "decided") {
			t.Errorf("%s: stored %s/%s, callback said %v", id, rec.State, rec.Status, st)
		}
	}
	t.Logf("%d acknowledged before SIGKILL; %d authz calls before, %d after", len(ids), callsBefore, calls.Load()-callsBefore)
}
