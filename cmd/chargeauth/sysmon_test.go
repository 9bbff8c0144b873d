package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/chargeauth/chargeauth/node"
)

// serve and authz restart themselves, in place (same PID), with
// GODEBUG=schedtrace=2147483647, keeping the operator's other GODEBUG
// settings; a schedtrace the operator set is left as it is. The setting is
// read back from the running process (/proc/<pid>/environ) and from
// serve's debug line.
func TestServeAndAuthzRestartWithSysmonAwake(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	t.Setenv("GODEBUG", "") // the cases set it themselves
	for _, tc := range []struct {
		name  string
		env   []string
		want  string // GODEBUG of the running process
		awake bool
	}{
		{"unset", nil, node.SysmonGODEBUG, true},
		{"others kept", []string{"GODEBUG=madvdontneed=1"}, "madvdontneed=1," + node.SysmonGODEBUG, true},
		{"operator's schedtrace=0", []string{"GODEBUG=schedtrace=0"}, "schedtrace=0", false},
	} {
		t.Run("serve/"+tc.name, func(t *testing.T) {
			p := startEnv(t, tc.env, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
				"--authz-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "debug")
			p.addr(t, "public listener")
			if got := godebugOf(t, p.cmd.Process.Pid); got != tc.want {
				t.Errorf("GODEBUG of pid %d = %q, want %q", p.cmd.Process.Pid, got, tc.want)
			}
			p.mu.Lock()
			var line map[string]any
			for _, l := range p.lines {
				if l["msg"] == "runtime" {
					line = l
				}
			}
			p.mu.Unlock()
			if line == nil || line["sysmon_awake"] != tc.awake {
				t.Errorf("runtime debug line %v: want sysmon_awake %v", line, tc.awake)
			}
			if strings.Contains(p.logs(), "could not restart") {
				t.Errorf("warned: %s", p.logs())
			}
		})
		t.Run("authz/"+tc.name, func(t *testing.T) {
			p := startEnv(t, tc.env, "authz", "--listen", "127.0.0.1:0")
			p.addr(t, "authorization service listener")
			if got := godebugOf(t, p.cmd.Process.Pid); got != tc.want {
				t.Errorf("GODEBUG of pid %d = %q, want %q", p.cmd.Process.Pid, got, tc.want)
			}
		})
	}
}

// godebugOf is GODEBUG in the environment pid runs with now.
func godebugOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("GODEBUG=")); ok {
			return string(v)
		}
	}
	return ""
}
