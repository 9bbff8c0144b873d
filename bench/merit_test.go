package main

import (
	"bytes"
	"os"
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
		TempDir: t.TempDir(), DrainTimeout: 30 * time.Second}
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
		for _, srv := range []string{"bare", "durable", "chargeauth"} {
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
		ch := s.Phase("chargeauth", load)
		if ch.Callbacks == nil || ch.Callbacks.Lost != 0 || ch.Callbacks.Statuses["allowed"] != ch.Callbacks.Received {
			t.Errorf("chargeauth/%s callbacks %+v: want one allowed per 202", load, ch.Callbacks)
		}
		if ch.CPUSeconds <= 0 {
			t.Errorf("chargeauth/%s: no CPU read from its process", load)
		}
	}
	for _, want := range []string{"open: CPU us/completed", "burst: accepts/s", "/durable"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

// procCPU reads a process's CPU from /proc: this one's grows while it
// spins, and matches getrusage to the clock tick.
func TestProcCPU(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for spin := time.Now(); time.Since(spin) < 100*time.Millisecond; {
	}
	after, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 50*time.Millisecond {
		t.Errorf("CPU grew by %s over 100ms of spinning", after-before)
	}
	if ru := cpuTime(); ru-after > time.Second || after-ru > 20*time.Millisecond {
		t.Errorf("/proc says %s, getrusage %s", after, ru)
	}
	if _, err := procCPU(1 << 30); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
