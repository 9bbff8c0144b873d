package main

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// metricLine returns the first /metrics line of admin that starts with
// prefix, or "".
func metricLine(t *testing.T, admin, prefix string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			return sc.Text()
		}
	}
	return ""
}

// serve with --acl reports its ACL on /metrics, and a failed SIGHUP reload
// moves the failure counter and keeps the version.
func TestServeACLMetrics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.json")
	if err := os.WriteFile(path, []byte(`{"entries":[{"driver_token":"metricsDriverToken00001","status":"active"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--acl", path, "--acl-reload-interval", "0")
	admin := p.addr(t, "admin listener")
	p.addr(t, "public listener")

	info := metricLine(t, admin, "chargeauth_acl_info{")
	if !strings.HasSuffix(info, " 1") || !strings.Contains(info, `version="`) {
		t.Fatalf("acl_info: %q", info)
	}
	if l := metricLine(t, admin, "chargeauth_acl_reload_failures_total "); l != "chargeauth_acl_reload_failures_total 0" {
		t.Fatalf("reload failures at start: %q", l)
	}
	if l := metricLine(t, admin, "chargeauth_build_info{"); !strings.Contains(l, `goversion="go`) {
		t.Errorf("build_info: %q", l)
	}

	if err := os.WriteFile(path, []byte(`{"entries":[`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "chargeauth_acl_reload_failures_total 1 after a bad reload", func() bool {
		return metricLine(t, admin, "chargeauth_acl_reload_failures_total ") == "chargeauth_acl_reload_failures_total 1"
	})
	if l := metricLine(t, admin, "chargeauth_acl_info{"); l != info {
		t.Errorf("a failed reload changed the ACL: %q, was %q", l, info)
	}
}
