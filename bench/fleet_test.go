package main

import (
	"os"
	"os/exec"
	"testing"
)

// The fleet workload runs: three nodes behind HAProxy accept every request
// of a small load and call each back once.
func TestFleetSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs HAProxy")
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
			t.Skip("haproxy is not installed (.ci/run installs Debian's)")
		}
	}
	r, err := FleetConfig{Load: LoadConfig{Concurrency: 8, Requests: 300, Timeout: 10e9}, Nodes: 3,
		TempDir: t.TempDir(), DrainTimeout: 30e9}.Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Accepted != 300 || r.Callbacks == nil || r.Callbacks.Lost != 0 || r.Callbacks.Distinct != 300 {
		t.Fatalf("fleet-3: %d accepted, callbacks %+v; want 300 and one each", r.Accepted, r.Callbacks)
	}
}
