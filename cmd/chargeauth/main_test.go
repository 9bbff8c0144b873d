package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/internal/testwait"
)

// waitFor polls cond until it holds, failing with what after timeout: the
// tree's one polling helper.
var waitFor = testwait.Until

// The command line is checked from the outside: exit codes, messages,
// flags and their variables, and a real binary started and stopped.

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBadConfigurationExits2(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"negative timeout", nil, []string{"serve", "--decision-timeout", "-1s"}, "--decision-timeout -1s: must be at least 1ms"},
		{"zero concurrency", nil, []string{"serve", "--authz-concurrency", "0"}, "--authz-concurrency 0: must be at least 1"},
		{"malformed secret", nil, []string{"serve", "--callback-secret", "nope"}, "--callback-secret"},
		{"unknown flag", nil, []string{"serve", "--bogus"}, "bogus"},
		{"bad env value", map[string]string{"CHARGEAUTH_DECISION_TIMEOUT": "soon"}, []string{"serve"}, "CHARGEAUTH_DECISION_TIMEOUT"},
		{"env read", map[string]string{"CHARGEAUTH_MAX_INFLIGHT": "0"}, []string{"serve"}, "--max-inflight 0"},
		{"bad size", nil, []string{"serve", "--min-free-disk", "lots"}, "min-free-disk"},
		{"bad authz url", nil, []string{"serve", "--authz-url", "ftp://x"}, "--authz-url"},
		{"authz url with user info", nil, []string{"serve", "--authz-url", "http://u@127.0.0.1:1"}, "--authz-url"},
		{"acl with authz url", nil, []string{"serve", "--authz-url", "http://127.0.0.1:1", "--acl", "x.json"}, "--acl"},
		{"unreadable acl", nil, []string{"serve", "--acl", "/nonexistent/acl.json", "--data-dir", "DATADIR"}, "--acl"},
		{"bad log level", nil, []string{"serve", "--log-level", "loud"}, "--log-level"},
		{"bad cidr", nil, []string{"serve", "--callback-allow-cidr", "10.0.0.0/33"}, "--callback-allow-cidr"},
		{"missing ca file", nil, []string{"serve", "--callback-ca-file", "/nonexistent/ca.pem"}, "--callback-ca-file"},
		{"unknown command", nil, []string{"frobnicate"}, "unknown command"},
		{"no command", nil, nil, "Usage"},
		{"sessions without subcommand", nil, []string{"sessions"}, "sessions list"},
	} {
		t.Run(tc.name, func(t *testing.T) { mustRefuse(t, tc.env, tc.args, tc.want) })
	}
}

func TestVersion(t *testing.T) {
	if code, out, _ := runCmd(t, "version"); code != 0 || !strings.HasPrefix(out, "chargeauth ") {
		t.Errorf("version: %d %q", code, out)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds chargeauth once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "chargeauth-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "chargeauth")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a running chargeauth subprocess whose JSON log lines are read.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	done  chan struct{}
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with env (NAME=value) added to the environment.
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	// No drain unless a test asks for one (--drain-delay wins).
	cmd.Env = append(append(os.Environ(), "CHARGEAUTH_DRAIN_DELAY=0"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				p.mu.Lock()
				p.lines = append(p.lines, m)
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return p
}

// addr waits for the log line msg and returns its addr.
func (p *proc) addr(t *testing.T, msg string) string {
	t.Helper()
	var addr string
	waitFor(t, 30*time.Second, fmt.Sprintf("a %q log line", msg), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.lines {
			if l["msg"] == msg {
				addr = fmt.Sprint(l["addr"])
				return true
			}
		}
		return false
	})
	return addr
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, _ := json.Marshal(p.lines)
	return string(b)
}

// The binary serves on its embedded authorization service, answers a
// request, logs one line per listener, never logs a full token (not even at
// debug level, where every request is logged), and exits 0
// on SIGTERM; the sessions command reads the stopped store.
func TestServeBinary(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--allow-private-callbacks", "--callback-max-attempts", "1", "--log-level", "debug")
	public := p.addr(t, "public listener")
	admin := p.addr(t, "admin listener")
	p.addr(t, "authorization service listener")

	const token = "validDriverToken1234567"
	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"` + token + `","callback_url":"http://127.0.0.1:1/cb"}`
	resp, err := http.Post("http://"+public+"/charge_point/session/", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("POST: %d %s", resp.StatusCode, raw)
	}
	var ack struct {
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(raw, &ack)

	// The callback goes nowhere (port 1): one attempt, then failed.
	var b []byte
	waitFor(t, 20*time.Second, "the request to fail", func() bool {
		r, err := http.Get("http://" + admin + "/sessions/" + ack.RequestID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(r.Body)
		r.Body.Close()
		return strings.Contains(string(b), `"state":"failed"`)
	})
	if !strings.Contains(string(b), `"status":"allowed"`) {
		t.Errorf("record %s: want allowed", b)
	}

	// Running: the sessions command goes through the admin API.
	out, err := exec.Command(binary(t), "sessions", "list", "--admin-url", "http://"+admin, "--json",
		"--station", "123E4567-E89B-12D3-A456-426614174000", "--since", "1h").Output()
	if err != nil || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), ack.RequestID) || strings.Contains(string(out), token) {
		t.Errorf("sessions list --json through the admin API: %v %q", err, out)
	}
	out, err = exec.Command(binary(t), "sessions", "list", "--admin-url", "http://"+admin, "--station", "aaaaaaaa-e89b-12d3-a456-426614174000").Output()
	if err != nil || strings.Contains(string(out), ack.RequestID) {
		t.Errorf("sessions list --station of another station: %v %q", err, out)
	}
	out, err = exec.Command(binary(t), "sessions", "get", ack.RequestID, "--admin-url", "http://"+admin).Output()
	if err != nil || !strings.Contains(string(out), "failed") {
		t.Errorf("sessions get through the admin API: %v %q", err, out)
	}

	// Redeliver every failed request of the last hour: it is delivered
	// again (and fails again: nothing listens on port 1).
	out, err = exec.Command(binary(t), "sessions", "redeliver", "--state", "failed", "--since", "1h", "--admin-url", "http://"+admin, "--json").Output()
	if err != nil || !strings.Contains(string(out), ack.RequestID) || !strings.Contains(string(out), `"state":"decided"`) {
		t.Errorf("sessions redeliver --state failed: %v %q", err, out)
	}
	if code, _, stderr := runCmd(t, "sessions", "redeliver", "--state", "delivered", "--admin-url", "http://"+admin); code != 2 {
		t.Errorf("redeliver --state delivered: exit %d (%s), want 2", code, stderr)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0", err)
	}
	logs := p.logs()
	if strings.Contains(logs, token) {
		t.Errorf("the logs contain the full driver token")
	}
	if !strings.Contains(logs, ack.RequestID) {
		t.Errorf("no log line carries the request id")
	}
	// Durations: milliseconds under _ms, in every line (the failed
	// callback attempts, the stop).
	p.mu.Lock()
	checkLogDurations(t, p.lines)
	p.mu.Unlock()
	for _, want := range []string{`"took_ms":`, `"grace_ms":`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line has %s", want)
		}
	}

	// Stopped: the sessions command reads the store directly.
	out, err = exec.Command(binary(t), "sessions", "get", ack.RequestID, "--data-dir", dataDir, "--json").Output()
	if err != nil {
		t.Fatalf("sessions get: %v", err)
	}
	if !strings.Contains(string(out), `"state":"failed"`) || strings.Contains(string(out), token) {
		t.Errorf("sessions get: %s", out)
	}
	out, err = exec.Command(binary(t), "sessions", "list", "--data-dir", dataDir, "--since", "1h").Output()
	if err != nil || !strings.Contains(string(out), ack.RequestID) || !strings.Contains(string(out), "REQUEST_ID") {
		t.Errorf("sessions list: %v %s", err, out)
	}
}

// A port already in use is a configuration error: exit 2.
func TestPortClashExits2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(binary(t), "serve", "--listen", ln.Addr().String(), "--admin-listen", "127.0.0.1:0",
		"--authz-listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2: %s", err, out)
	}
	if !strings.Contains(string(out), ln.Addr().String()) {
		t.Errorf("the message should name the address: %s", out)
	}
}

// chargeauth authz reloads its ACL on SIGHUP (here with polling off).
func TestAuthzReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acl.json")
	write := func(status string) {
		t.Helper()
		body := `{"entries":[{"driver_token":"hupDriverToken000000001","status":"` + status + `"}]}`
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("active")
	p := start(t, "authz", "--listen", "127.0.0.1:0", "--acl", path, "--acl-reload-interval", "0")
	addr := p.addr(t, "authorization service listener")
	ask := func() string {
		t.Helper()
		resp, err := http.Post("http://"+addr+"/authorize", "application/json",
			strings.NewReader(`{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"hupDriverToken000000001"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Status string `json:"status"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out.Status
	}
	if st := ask(); st != "allowed" {
		t.Fatalf("before: %s", st)
	}
	write("blocked")
	time.Sleep(100 * time.Millisecond) // on purpose: a while in which nothing may reload it
	if st := ask(); st != "allowed" {
		t.Fatalf("reloaded without SIGHUP (polling is off): %s", st)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "SIGHUP to reload the ACL", func() bool { return ask() == "not_allowed" })
}

// mustRefuse runs the command with env set and DATADIR in args replaced by
// a fresh directory, and checks that it exits 2 with every one of want in
// its stderr, having created nothing in that directory.
func mustRefuse(t *testing.T, env map[string]string, args []string, want ...string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	dataDir := t.TempDir()
	args = slices.Clone(args)
	for i, a := range args {
		if a == "DATADIR" {
			args[i] = dataDir
		}
	}
	code, _, stderr := runCmd(t, args...)
	if code != 2 {
		t.Errorf("exit %d, want 2 (stderr %q)", code, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr %q does not mention %q", stderr, w)
		}
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
		t.Errorf("a rejected configuration created files in the data dir")
	}
}

// freeAddr reserves a loopback port and releases it, for addresses that
// must be known before the processes start (--peers, HAProxy's servers).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
