package main

import (
	"os"
	"strings"
	"testing"
)

// serve refuses an admin listener off loopback without a token: exit 2,
// saying why, before it creates anything.
func TestAdminOffLoopbackWithoutTokenExits2(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0"} {
		t.Run(addr, func(t *testing.T) {
			dataDir := t.TempDir()
			code, _, stderr := runCmd(t, "serve", "--admin-listen", addr, "--data-dir", dataDir,
				"--listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0")
			if code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, stderr)
			}
			for _, want := range []string{"--admin-listen", "no admin token", "CHARGEAUTH_ADMIN_TOKEN"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q does not say %q", stderr, want)
				}
			}
			if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
				t.Errorf("the refused start created files in the data dir")
			}
		})
	}
}
