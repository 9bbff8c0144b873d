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

	"github.com/chargeauth/chargeauth/internal/testwait"
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
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return // cut short by a kill: not a callback received
	}
	_ = json.Unmarshal(b, &body)
	time.Sleep(s.delay) // a slow receiver, on purpose
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
	testwait.Eventually(t, timeout, 20*time.Millisecond, func() error {
		for _, id := range ids {
			if len(s.statuses(id)) == 0 {
				return fmt.Errorf("request %s was acknowledged but never called back", id)
			}
		}
		return nil
	})
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
//
// The fake authorization service answers allowed to the first run and
// not_allowed to every run after the kill, so a request decided a second
// time after the restart would show: its callbacks would disagree, or
// disagree with the stored status, or an id decided before the kill would
// not be allowed any more.
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
		// Each case waits for a few callbacks before the kill: an id
		// decided before it is what a second decision would change.
		{name: "under load", kill: func(acked int, s *sinkRecorder) bool { return acked >= 500 && s.n.Load() >= 10 }},
		{name: "while delivering to a slow sink", sinkDelay: 20 * time.Millisecond,
			kill: func(acked int, s *sinkRecorder) bool { return acked >= 500 && s.n.Load() >= 50 }},
		{name: "during the resume scan", killResume: true, kill: func(acked int, s *sinkRecorder) bool { return acked >= 500 && s.n.Load() >= 10 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			killTest(t, tc.sinkDelay, tc.kill, tc.killResume)
		})
	}
	t.Run("while a receiver always fails", killFailingTest)
}

func killTest(t *testing.T, sinkDelay time.Duration, kill func(int, *sinkRecorder) bool, killResume bool) {
	var calls atomic.Int64
	// deny is set between the kill and the restart: the first run is
	// answered allowed, every later run not_allowed. It is read when a call
	// arrives, so a call of the first run still answers allowed.
	var deny atomic.Bool
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		denied := deny.Load()
		time.Sleep(200 * time.Millisecond) // on purpose: calls are in flight at the kill
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "authorize") {
			if denied {
				fmt.Fprint(w, `{"status":"not_allowed","reason":"blocked"}`)
			} else {
				fmt.Fprint(w, `{"status":"allowed"}`)
			}
		}
	}))
	defer authz.Close()
	sink := &sinkRecorder{delay: sinkDelay}
	recv := httptest.NewServer(sink)
	defer recv.Close()

	dataDir := t.TempDir()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--authz-url", authz.URL, "--allow-private-callbacks",
		"--decision-timeout", "30s", "--callback-schedule", "0s,10ms,20ms,40ms,80ms,100ms", "--callback-max-attempts", "10"}
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
	waitFor(t, 20*time.Second, "the kill condition", func() bool {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if kill(n, sink) && killed.CompareAndSwap(false, true) {
			_ = p.cmd.Process.Kill()
		}
		return killed.Load()
	})
	_ = p.cmd.Wait()
	<-p.done
	mu.Lock()
	ids := append([]string(nil), acked...)
	mu.Unlock()
	deliveredBefore := sink.n.Load()
	// Ids called back before the kill were decided (durably) by the first
	// run, so allowed: they must stay so.
	calledBack := map[string]bool{}
	for _, id := range ids {
		if len(sink.statuses(id)) > 0 {
			calledBack[id] = true
		}
	}
	flippedAt := time.Now()
	deny.Store(true)

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
	decidedBefore, decidedAfter := 0, 0
	for _, id := range ids {
		st := sink.statuses(id)
		for _, s := range st[1:] {
			if s != st[0] {
				t.Errorf("%s delivered with two statuses: %v", id, st)
			}
		}
		rec := getRecord(t, admin, id)
		if rec.Status != st[0] || rec.DecidedBy == "" || (rec.State != "delivered" && rec.State != "decided") {
			t.Errorf("%s: stored %s/%s by %q, callback said %v", id, rec.State, rec.Status, rec.DecidedBy, st)
		}
		// The stored decision is the one of the run that made it: the
		// first run's (allowed) if it was made before the kill, a later
		// run's (not_allowed) if not.
		want := "not_allowed"
		if rec.DecidedAt.Before(flippedAt) {
			want = "allowed"
			decidedBefore++
		} else {
			decidedAfter++
		}
		if rec.DecidedBy == "timeout" {
			want = "unknown"
		}
		if rec.Status != want {
			t.Errorf("%s: stored %s by %s at %s, want %s (the authorization service's answer switched at %s)",
				id, rec.Status, rec.DecidedBy, rec.DecidedAt.Format(time.RFC3339Nano), want, flippedAt.Format(time.RFC3339Nano))
		}
		if calledBack[id] && (rec.Status != "allowed" || !rec.DecidedAt.Before(flippedAt)) {
			t.Errorf("%s: called back before the kill, yet stored %s decided at %s: decided again after the restart",
				id, rec.Status, rec.DecidedAt.Format(time.RFC3339Nano))
		}
	}
	// Both answers must have been given, or the check above proves nothing.
	if len(calledBack) == 0 || decidedAfter == 0 {
		t.Errorf("%d ids called back before the kill, %d decided after it: the test needs some of each", len(calledBack), decidedAfter)
	}
	t.Logf("%d acknowledged before SIGKILL, %d callbacks delivered before it (%d ids); %d decided before the kill, %d after; %d authz calls in all",
		len(ids), deliveredBefore, len(calledBack), decidedBefore, decidedAfter, calls.Load())
}

// storedRecord is the part of the admin view of a record the crash tests
// read.
type storedRecord struct {
	State            string    `json:"state"`
	Status           string    `json:"status"`
	DecidedBy        string    `json:"decided_by"`
	DecidedAt        time.Time `json:"decided_at"`
	CallbackAttempts int       `json:"callback_attempts"`
	Attempts         []struct {
		StatusCode int `json:"status_code"`
	} `json:"attempts"`
}

// getRecord reads one record through the admin listener.
func getRecord(t *testing.T, admin, id string) storedRecord {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/sessions/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rec storedRecord
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /sessions/%s: %d %s", id, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		t.Fatalf("GET /sessions/%s: %v", id, err)
	}
	return rec
}

// failingReceiver answers 500 to every callback and counts them by
// webhook-id.
type failingReceiver struct {
	mu  sync.Mutex
	got map[string]int
	n   atomic.Int64
}

func (f *failingReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	f.mu.Lock()
	if f.got == nil {
		f.got = map[string]int{}
	}
	f.got[r.Header.Get("webhook-id")]++
	f.mu.Unlock()
	f.n.Add(1)
	w.WriteHeader(http.StatusInternalServerError)
}

func (f *failingReceiver) hits(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got[id]
}

// A SIGKILL while callbacks are being retried neither loses nor restarts
// their schedule: after the restart every request ends failed after exactly
// --callback-max-attempts stored attempts, and the receiver saw at most one
// more (the attempt in flight at the kill is made again; retry outcomes are
// synced, so no earlier one is). Few requests: their attempt records then
// fit in one WAL block, and an outcome written without a sync stays in
// Pebble's buffer, where a kill loses it (about one run in ten broke when
// retry outcomes were not synced).
func killFailingTest(t *testing.T) {
	const maxAttempts, requests = 3, 40
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"allowed"}`)
	}))
	defer authz.Close()
	recv := &failingReceiver{}
	recvSrv := httptest.NewServer(recv)
	defer recvSrv.Close()

	dataDir := t.TempDir()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--authz-url", authz.URL, "--allow-private-callbacks",
		"--decision-timeout", "30s", "--callback-max-attempts", fmt.Sprint(maxAttempts),
		"--callback-schedule", "0s,100ms,200ms,400ms"}
	p := start(t, args...)
	public := p.addr(t, "public listener")

	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"` + recvSrv.URL + `/cb"}`
	// Kill in the middle of the retries: once the receiver has seen
	// about a third of the attempts, while requests may still arrive.
	var killed atomic.Bool
	kill := func() bool {
		if recv.n.Load() >= requests && killed.CompareAndSwap(false, true) {
			_ = p.cmd.Process.Kill()
		}
		return killed.Load()
	}
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	var next atomic.Int64
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= requests && !kill() {
				resp, err := client.Post("http://"+public+"/charge_point/session/", "application/json", strings.NewReader(body))
				if err != nil {
					if !killed.Load() {
						t.Errorf("POST: %v", err)
					}
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var ack struct {
					RequestID string `json:"request_id"`
				}
				if resp.StatusCode != 202 || json.Unmarshal(b, &ack) != nil {
					t.Errorf("POST: %d %s", resp.StatusCode, b)
					return
				}
				mu.Lock()
				ids = append(ids, ack.RequestID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	testwait.Eventually(t, 20*time.Second, 2*time.Millisecond, func() error {
		if !kill() {
			return fmt.Errorf("only %d callback attempts", recv.n.Load())
		}
		return nil
	})
	_ = p.cmd.Wait()
	<-p.done
	hitsBefore := recv.n.Load()

	p2 := start(t, args...)
	admin := p2.addr(t, "admin listener")
	p2.addr(t, "public listener")
	var last storedRecord
	for _, id := range ids {
		testwait.Eventually(t, 60*time.Second, 20*time.Millisecond, func() error {
			if last = getRecord(t, admin, id); last.State != "failed" {
				return fmt.Errorf("%s: still %s after %d attempts since the restart", id, last.State, last.CallbackAttempts)
			}
			return nil
		})
		if last.CallbackAttempts != maxAttempts {
			t.Errorf("%s: failed after %d stored attempts, want %d", id, last.CallbackAttempts, maxAttempts)
		}
		for _, a := range last.Attempts {
			if a.StatusCode != http.StatusInternalServerError {
				t.Errorf("%s: an attempt stored status %d, the receiver only answers 500", id, a.StatusCode)
			}
		}
		if n := recv.hits(id); n < last.CallbackAttempts || n > maxAttempts+1 {
			t.Errorf("%s: the receiver saw %d attempts, want %d to %d", id, n, last.CallbackAttempts, maxAttempts+1)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("%d requests acknowledged, %d callback attempts before SIGKILL, %d in all", len(ids), hitsBefore, recv.n.Load())
}
