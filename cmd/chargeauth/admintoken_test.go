package main

import (
	"os"
	"path/filepath"
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

func TestReadAdminToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("fileToken-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, env, want string
		wantErr         bool
	}{
		{"", "", "", false},
		{"", "envToken-456", "envToken-456", false},
		{file, "", "fileToken-123", false},
		{file, "envToken-456", "", true},
		{empty, "", "", true},
		{filepath.Join(dir, "missing"), "", "", true},
	} {
		got, err := readAdminToken(tc.file, tc.env)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("readAdminToken(%q, %q) = %q, %v; want %q, error %v", tc.file, tc.env, got, err, tc.want, tc.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), "fileToken") || strings.Contains(err.Error(), "envToken")) {
			t.Errorf("error %q quotes the token", err)
		}
	}
	for addr, ok := range map[string]bool{"127.0.0.1:8082": true, "[::1]:8082": true, "localhost:8082": true, "0.0.0.0:8082": false, ":8082": false} {
		if err := requireLoopback(addr); (err == nil) != ok {
			t.Errorf("requireLoopback(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}
