package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The fleet workload runs end to end at a tiny size: one node, then three,
// each its own process behind HAProxy with the authorization service its
// own process too; every request of every load completes (202s called
// back once, GETs answered 200 by the owner or through a forwarding node)
// and each process's CPU is read. It asserts on counts only, never on
// speed.
func TestFleetSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs HAProxy")
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
			t.Skip("haproxy is not installed (.ci/run installs Debian's): the fleet workload needs it")
		}
	}
	cfg := FleetConfig{Rate: 200, Duration: time.Second, Concurrency: 8, Burst: 300, Gets: 100,
		Timeout: 10 * time.Second, Idle: 100 * time.Millisecond, TempDir: t.TempDir(), DrainTimeout: 30 * time.Second}
	s, err := cfg.Run()
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := s.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	for _, n := range []int{1, 3} {
		for _, load := range []string{"idle", "open", "burst", "get-owner", "get-forwarded"} {
			p := s.Phase(n, "a", load)
			if n == 1 && load == "get-forwarded" {
				if p != nil {
					t.Errorf("fleet-1 has forwarded GETs")
				}
				continue
			}
			if p == nil {
				t.Fatalf("no phase fleet-%d/%s", n, load)
			}
			switch load {
			case "open", "burst":
				if p.Accepted == 0 || p.Completed != p.Accepted || p.ErrorTotal != 0 || p.Callbacks.Lost != 0 {
					t.Errorf("fleet-%d/%s: 202s %d, called back %d, errors %v", n, load, p.Accepted, p.Completed, p.Errors)
				}
				if load == "burst" && p.Sent != cfg.Burst {
					t.Errorf("fleet-%d/burst sent %d, want %d", n, p.Sent, cfg.Burst)
				}
				if p.NodesCPU <= 0 || p.HAProxyCPU < 0 || p.AuthzCPU < 0 {
					t.Errorf("fleet-%d/%s: CPU nodes %v, HAProxy %v, authz %v", n, load, p.NodesCPU, p.HAProxyCPU, p.AuthzCPU)
				}
				if p.WALSyncs <= 0 || p.CtxSwitches <= 0 {
					t.Errorf("fleet-%d/%s: %v WAL fsyncs, %v context switches read from the nodes", n, load, p.WALSyncs, p.CtxSwitches)
				}
			case "get-owner", "get-forwarded":
				want := min(int64(cfg.Gets), s.Phase(n, "a", "open").Accepted) // ids of the open loop's 202s
				if p.Sent != want || p.Sent == 0 || p.Completed != p.Sent {
					t.Errorf("fleet-%d/%s: %d GETs, %d answered 200 (%v)", n, load, p.Sent, p.Completed, p.Errors)
				}
			}
		}
	}
	for _, want := range []string{"open: nodes' CPU us/completed", "burst: accepts/s", "get-forwarded: p99 ms", "3/1 a"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}
