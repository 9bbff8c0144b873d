package main

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serve's flags and their defaults, as DESIGN.md and the README's table
// give them. A flag added without a line here fails the test.
var serveDefaults = map[string]string{
	"listen": ":8080", "admin-listen": "127.0.0.1:8082", "data-dir": "./data",
	"authz-url": `""`, "authz-listen": "127.0.0.1:8081", "acl": `""`, "acl-reload-interval": "1s", "authz-batch": "false",
	"decision-timeout": "10s", "authz-concurrency": "64",
	"callback-secret": `""`, "callback-backoff": "0s", "callback-schedule": "0s,5s,5m,30m,2h,5h,10h,14h,20h,24h",
	"callback-max-attempts": "0", "callback-timeout": "10s", "callback-max-age": "72h0m0s",
	"callback-host-concurrency": "64", "allow-private-callbacks": "false",
	"callback-allow-cidr": `""`, "callback-ca-file": `""`,
	"max-inflight": "10000", "max-backlog": "0", "shutdown-grace": "10s",
	"retention": "168h0m0s", "min-free-disk": "256 MiB",
	"log-level": "info", "log-format": "json", "admin-token-file": `""`,
	"node-id": `""`, "peers": `""`, "peer-admin-urls": `""`, "drain-delay": "5s",
}

// The help lists every flag of serve with the default the design gives it
// and the variable it is also read from, and no other flag.
func TestServeHelpDefaults(t *testing.T) {
	for k := range serveDefaults {
		t.Setenv("CHARGEAUTH_"+strings.ToUpper(strings.ReplaceAll(k, "-", "_")), "") // unset: the defaults show
	}
	code, stdout, _ := runCmd(t, "serve", "-h")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	line := regexp.MustCompile(`(?m)^  --([a-z-]+) \(default (.*), \$([A-Z_]+)\)$`)
	seen := map[string]bool{}
	for _, m := range line.FindAllStringSubmatch(stdout, -1) {
		flag, got, env := m[1], m[2], m[3]
		seen[flag] = true
		if want := "CHARGEAUTH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_")); env != want {
			t.Errorf("--%s: variable $%s, want $%s", flag, env, want)
		}
		want, ok := serveDefaults[flag]
		switch {
		case !ok:
			t.Errorf("--%s (default %s) is not in the design's list", flag, got)
		case got != want:
			t.Errorf("--%s: default %s, want %s", flag, got, want)
		}
	}
	for flag := range serveDefaults {
		if !seen[flag] {
			t.Errorf("help lacks --%s", flag)
		}
	}
}

// chargeauth sink prints each callback it gets, one line with its
// webhook headers and body, answers the status it was given, and exits 0
// on SIGTERM.
func TestSinkPrintsCallbacks(t *testing.T) {
	cmd := exec.Command(binary(t), "sink", "--listen", "127.0.0.1:0", "--status", "202")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	addr := make(chan string, 1)
	go func() {
		m := regexp.MustCompile(`sink listening on (\S+),`).FindStringSubmatch(firstLine(stderr))
		if m != nil {
			addr <- m[1]
		}
		close(addr)
	}()
	var a string
	select {
	case a = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatal("the sink never said where it listens")
	}
	if a == "" {
		t.Fatal("the sink's first line does not give its address")
	}

	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","status":"allowed"}`
	req, err := http.NewRequest("POST", "http://"+a+"/cb", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", "0190a6f2-7c3b-7def-8a12-3456789abcde")
	req.Header.Set("webhook-timestamp", "1700000000")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Errorf("sink answered %d, want the --status 202", resp.StatusCode)
	}
	got := make(chan string, 1)
	go func() { got <- firstLine(stdout) }()
	select {
	case l := <-got:
		for _, want := range []string{"POST /cb", "webhook-id=0190a6f2-7c3b-7def-8a12-3456789abcde", "webhook-timestamp=1700000000", body} {
			if !strings.Contains(l, want) {
				t.Errorf("printed %q, want it to contain %q", l, want)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sink printed nothing")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("sink after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sink did not stop on SIGTERM")
	}
}

// firstLine reads one line from r.
func firstLine(r io.Reader) string {
	l, _ := bufio.NewReader(r).ReadString('\n')
	return strings.TrimSpace(l)
}

// A flag given on the command line wins over its CHARGEAUTH_ variable: with
// CHARGEAUTH_DECISION_TIMEOUT=1h and --decision-timeout 7s, a 202 gives 7
// seconds to the deadline.
func TestFlagWinsOverVariable(t *testing.T) {
	t.Setenv("CHARGEAUTH_DECISION_TIMEOUT", "1h")
	p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--authz-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--decision-timeout", "7s")
	addr := p.addr(t, "public listener")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+addr+"/charge_point/session/", "application/json",
		strings.NewReader(`{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"https://example.com/cb"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "7" {
		t.Errorf("Retry-After %q, want 7: the flag's 7s, not the variable's 1h", ra)
	}
}
