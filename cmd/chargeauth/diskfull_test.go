package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/internal/testwait"
)

// mountTmpfs mounts a tmpfs of size at a new directory and unmounts it at
// the end of the test. It skips the test, saying why, where mounting is
// refused (not root, no CAP_SYS_ADMIN, a container without mounts).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("this test fills a real size-limited filesystem and needs to mount a tmpfs (as root, as CI does); mounting was refused: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the filesystem is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for range 1 << 12 { // bounded: 4 GiB
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return name
		}
	}
	t.Fatalf("%s never filled up", dir)
	return ""
}

// The binary on a real, full filesystem: POSTs get 503 with Retry-After
// within 100 ms, GETs of stored ids and the admin reads answer within
// 100 ms, /readyz says 503 with the reason, nothing hangs; once space is
// freed, writes resume within 5 s without a restart, and every request
// acknowledged before the disk filled is decided and called back.
func TestDiskFullBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and mounts a tmpfs")
	}
	mnt := mountTmpfs(t, "32m")
	var hold atomic.Bool
	hold.Store(true)
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Answers wait while hold is set (bounded), so that the
		// decisions of the requests acknowledged before the fault meet it.
		_ = testwait.Poll(30*time.Second, 5*time.Millisecond, func() error {
			if hold.Load() {
				return errors.New("held")
			}
			return nil
		})
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"allowed"}`)
	}))
	defer authz.Close()
	sink := &sinkRecorder{}
	recv := httptest.NewServer(sink)
	defer recv.Close()

	p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(mnt, "data"), "--authz-url", authz.URL, "--allow-private-callbacks",
		"--decision-timeout", "60s", "--min-free-disk", "1MiB", "--callback-schedule", "0s,10ms,100ms")
	public := "http://" + p.addr(t, "public listener")
	admin := "http://" + p.addr(t, "admin listener")
	client := &http.Client{Timeout: 5 * time.Second}
	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"` + recv.URL + `/cb"}`
	post := func() (int, string, http.Header, time.Duration) {
		start := time.Now()
		resp, err := client.Post(public+"/charge_point/session/", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var ack struct {
			RequestID string `json:"request_id"`
		}
		_ = json.Unmarshal(b, &ack)
		return resp.StatusCode, ack.RequestID, resp.Header, time.Since(start)
	}
	get := func(url string) (int, string, time.Duration) {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}

	var ids []string
	for range 5 {
		code, id, _, _ := post()
		if code != 202 {
			t.Fatalf("POST before the fault: %d", code)
		}
		ids = append(ids, id)
	}

	filler := fill(t, mnt)
	hold.Store(false) // the decisions now meet the full disk
	faultAt := time.Now()
	// The free-space reading is cached for 100 ms: a POST in that while
	// is still written (and truly durable, so its 202 is no lie). Wait
	// for the node to say it is out.
	waitFor(t, 5*time.Second, "/readyz to turn 503 after the disk filled", func() bool {
		code, _, _ := get(admin + "/readyz")
		return code == 503
	})
	var tooks []time.Duration
	for i := range 20 {
		code, _, h, took := post()
		if code != 503 || h.Get("Retry-After") == "" || took > hang {
			t.Fatalf("POST %d on a full disk: %d (Retry-After %q) after %s", i, code, h.Get("Retry-After"), took)
		}
		tooks = append(tooks, took)
	}
	checkPrompt(t, "POST on a full disk", tooks)
	for _, url := range []string{public + "/charge_point/session/" + ids[0], admin + "/sessions/" + ids[0], admin + "/healthz", admin + "/metrics"} {
		var code int
		var took time.Duration
		_ = testwait.Poll(5*time.Second, 20*time.Millisecond, func() error {
			if code, _, took = get(url); code == 200 && took <= 100*time.Millisecond {
				return nil
			}
			return errors.New("not yet")
		})
		if code != 200 || took > 100*time.Millisecond {
			t.Errorf("GET %s on a full disk: %d after %s", url, code, took)
		}
	}
	code, ready, took := get(admin + "/readyz")
	if code != 503 || !strings.Contains(ready, "reason") || took > hang {
		t.Errorf("/readyz on a full disk: %d %s after %s, want 503 with the reason", code, ready, took)
	}
	t.Logf("readyz on a full disk: %s", ready)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	var late string
	testwait.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		code, id, _, _ := post()
		if code != 202 {
			return fmt.Errorf("writes did not resume after freeing space: %d", code)
		}
		late = id
		return nil
	})
	if resumed := time.Since(freedAt); resumed > 5*time.Second {
		t.Errorf("writes resumed %s after space was freed, want within 5s", resumed)
	}
	sink.waitAll(t, append(ids, late), 30*time.Second)
	for _, id := range ids {
		if st := sink.statuses(id); st[0] != "allowed" {
			t.Errorf("%s called back %v, want allowed", id, st)
		}
	}
	if code, ready, _ := get(admin + "/readyz"); code != 200 {
		t.Errorf("/readyz after space was freed: %d %s", code, ready)
	}
	// The log did not flood: the fault lasted a few seconds.
	p.mu.Lock()
	n := len(p.lines)
	p.mu.Unlock()
	if secs := time.Since(faultAt).Seconds(); float64(n) > 50+20*secs {
		t.Errorf("%d log lines in a %.1fs fault", n, secs)
	}
	t.Logf("%d log lines; writes resumed %s after space was freed", n, time.Since(freedAt).Round(time.Millisecond))
}

// hang is how long an answer may take before the test calls it a hang
// (the bug this guards against hung for as long as the disk stayed full).
// The promise is 100 ms, which checkPrompt holds on the median: one answer
// under -race on a loaded 2-core machine may take longer without any
// lock being held.
const hang = time.Second

// checkPrompt fails if the median of tooks is over 100 ms.
func checkPrompt(t *testing.T, what string, tooks []time.Duration) {
	t.Helper()
	s := slices.Clone(tooks)
	slices.Sort(s)
	med := s[len(s)/2]
	t.Logf("%s: median %s, slowest %s of %d", what, med, s[len(s)-1], len(s))
	if med > 100*time.Millisecond {
		t.Errorf("%s: median answer %s, want within 100ms", what, med)
	}
}
