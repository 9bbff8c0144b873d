package main

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/node"
)

// TestMain lets the test binary serve a ceiling when the merit workload
// starts it as one (envServe), as the bench binary does.
func TestMain(m *testing.M) {
	if os.Getenv(envServe) != "" {
		node.ScaleGOMAXPROCS()
		serveChildFromEnv()
		return
	}
	os.Exit(m.Run())
}

// TestMeritSmoke runs the figures of merit with a tiny load: each server
// is its own process (not this one, each a different one), every request
// completes (chargeauth's called back), and chargeauth's CPU is read from
// its process. It asserts on counts only, never on speed.
func TestMeritSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	cfg := MeritConfig{Rate: 300, Duration: time.Second, Concurrency: 8, Burst: 300, Timeout: 10 * time.Second,
		TempDir: t.TempDir(), DrainTimeout: 30 * time.Second, Relay: true}
	s, err := cfg.Run()
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := s.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	pids := map[int]string{}
	for _, load := range []string{"open", "burst"} {
		for _, srv := range []string{"bare", "durable", "relay", "relay-inline", "relay-authz", "chargeauth"} {
			p := s.Phase(srv, load)
			if p == nil {
				t.Fatalf("no phase %s/%s", srv, load)
			}
			if p.PID == os.Getpid() || pids[p.PID] != "" {
				t.Errorf("%s/%s ran in process %d, already %q (this one is %d)", srv, load, p.PID, pids[p.PID], os.Getpid())
			}
			pids[p.PID] = srv + "/" + load
			if p.Accepted == 0 || p.Completed != p.Accepted || p.ErrorTotal != 0 {
				t.Errorf("%s/%s: 202s %d, completed %d, errors %v", srv, load, p.Accepted, p.Completed, p.Errors)
			}
			if load == "burst" && p.Sent != cfg.Burst {
				t.Errorf("%s/burst sent %d, want %d", srv, p.Sent, cfg.Burst)
			}
			if p.PeakRSSBytes == 0 {
				t.Errorf("%s/%s: no peak RSS of the server process", srv, load)
			}
		}
		// relay-authz called back what its authorization service answered
		// (its ACL blocks the bench's token): every request was asked.
		if ra := s.Phase("relay-authz", load); ra.Callbacks == nil || ra.Callbacks.Statuses["not_allowed"] != ra.Accepted {
			t.Errorf("relay-authz/%s callbacks %+v: want one not_allowed per 202", load, ra.Callbacks)
		}
		ch := s.Phase("chargeauth", load)
		if ch.Callbacks == nil || ch.Callbacks.Lost != 0 || ch.Callbacks.Statuses["allowed"] != ch.Callbacks.Received {
			t.Errorf("chargeauth/%s callbacks %+v: want one allowed per 202", load, ch.Callbacks)
		}
		if ch.CPUSeconds <= 0 {
			t.Errorf("chargeauth/%s: no CPU read from its process", load)
		}
		if ch.WALSyncs <= 0 { // every 202 waited for an fsync
			t.Errorf("chargeauth/%s: no WAL fsync read from its /metrics", load)
		}
	}
	for _, want := range []string{"open: CPU us/completed", "burst: accepts/s", "/durable", "/relay", "inline/bare", "authz/bare", "open: WAL fsyncs/completed", "burst: callback p99 ms"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

// procCPU reads a process's CPU from /proc: this one's grows while it
// spins (it spins until /proc shows 200ms more, however busy the machine),
// never by more than the wall time on every CPU, and matches getrusage to
// the clock tick.
func TestProcCPU(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	after := before
	for after-before < 200*time.Millisecond {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("/proc shows %s of CPU after 30s of spinning", after-before)
		}
		for spin := time.Now(); time.Since(spin) < 10*time.Millisecond; {
		}
		now, err := procCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if now < after {
			t.Fatalf("/proc's CPU went back from %s to %s", after, now)
		}
		after = now
	}
	if wall := time.Since(start); after-before > wall*time.Duration(runtime.NumCPU())+10*time.Millisecond {
		t.Errorf("/proc shows %s of CPU in %s of wall time on %d CPUs", after-before, wall, runtime.NumCPU())
	}
	if ru := cpuTime(); ru-after > time.Second || after-ru > 20*time.Millisecond {
		t.Errorf("/proc says %s, getrusage %s", after, ru)
	}
	if _, err := procCPU(1 << 30); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
