package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// -h and --help print the command's help on stdout and exit 0, for every
// command and every sessions command.
func TestHelpExits0(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"}, {"help", "serve"},
		{"serve", "-h"}, {"serve", "--help"}, {"authz", "-h"}, {"sink", "--help"},
		{"sessions", "-h"}, {"sessions", "--help"}, {"sessions", "list", "-h"},
		{"sessions", "get", "--help"}, {"sessions", "redeliver", "-h"}, {"version", "-h"},
	} {
		code, stdout, stderr := runCmd(t, args...)
		if code != 0 || !strings.Contains(stdout, "Usage: ") || stderr != "" {
			t.Errorf("%v: exit %d, stdout %.40q, stderr %q; want 0, the help on stdout, nothing on stderr", args, code, stdout, stderr)
		}
	}
	// The sessions help names its commands; a command's help lists its flags.
	if _, out, _ := runCmd(t, "sessions", "-h"); !strings.Contains(out, "redeliver --state failed") {
		t.Errorf("sessions -h does not list its commands: %s", out)
	}
	if _, out, _ := runCmd(t, "sessions", "redeliver", "-h"); !strings.Contains(out, "--limit (default 0)") {
		t.Errorf("sessions redeliver -h: --limit should default to 0 (all): %s", out)
	}
}

// A bad flag, value or variable prints one line that names it and says how
// to get help, and exits 2.
func TestBadFlagOneLine(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"serve", "--foo"}, "chargeauth serve: unknown flag --foo (see 'chargeauth serve -h')"},
		{nil, []string{"serve", "--decision-timeout", "soon"}, `chargeauth serve: invalid value "soon" for --decision-timeout: not a duration (e.g. 10s, 1m30s, 250ms) (see 'chargeauth serve -h')`},
		{nil, []string{"serve", "--listen"}, "chargeauth serve: flag --listen needs a value (see 'chargeauth serve -h')"},
		{nil, []string{"serve", "stray"}, `chargeauth serve: unexpected argument "stray" (see 'chargeauth serve -h')`},
		{map[string]string{"CHARGEAUTH_MAX_INFLIGHT": "many"}, []string{"serve"}, `chargeauth serve: $CHARGEAUTH_MAX_INFLIGHT="many": invalid value for --max-inflight: not a whole number (see 'chargeauth serve -h')`},
		{nil, []string{"authz", "--bogus=1"}, "chargeauth authz: unknown flag --bogus (see 'chargeauth authz -h')"},
		{nil, []string{"sink", "--status", "x"}, `chargeauth sink: invalid value "x" for --status: not a whole number (see 'chargeauth sink -h')`},
		{nil, []string{"sessions", "list", "--foo"}, "chargeauth sessions: unknown flag --foo (see 'chargeauth sessions list -h')"},
		{nil, []string{"sessions", "get", "x", "--state", "failed"}, "chargeauth sessions: unknown flag --state (see 'chargeauth sessions get -h')"},
		{nil, []string{"sessions", "frob"}, `chargeauth sessions: unknown command "frob": list, get or redeliver (see 'chargeauth sessions -h')`},
		{nil, []string{"frob"}, `chargeauth: unknown command "frob" (see 'chargeauth -h')`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stderr != tc.want+"\n" || stdout != "" {
				t.Errorf("stderr %q (stdout %q), want the one line %q", stderr, stdout, tc.want)
			}
		})
	}
}

// version prints the version, the revision, the build time and the Go
// version, each once: a pseudo-version's embedded revision is not repeated.
func TestVersionEachFactOnce(t *testing.T) {
	const rev = "b3d3ddb1c2f3a4b5c6d7e8f90123456789abcdef"
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261205090000-b3d3ddb1c2f3+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2026-12-05T09:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	out := versionText(readBuildFacts(info, true))
	for _, want := range []string{"chargeauth v0.0.0-devel\n", "revision: " + rev + " (committed 2026-12-05T09:00:00Z, with uncommitted changes)\n", "built:    ", "go:       go1.26.8 "} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "b3d3ddb1c2f3"); n != 1 {
		t.Errorf("the revision appears %d times, want once:\n%s", n, out)
	}
	if !regexp.MustCompile(`(?m)^built:    \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(out) {
		t.Errorf("no build time:\n%s", out)
	}
	// A tagged build shows its tag.
	info.Main.Version = "v1.2.0"
	if out := versionText(readBuildFacts(info, true)); !strings.HasPrefix(out, "chargeauth v1.2.0\n") {
		t.Errorf("tagged: %s", out)
	}
	// And the command prints four lines.
	if code, out, _ := runCmd(t, "version"); code != 0 || strings.Count(out, "\n") != 4 || !strings.HasPrefix(out, "chargeauth ") {
		t.Errorf("version: exit %d %q", code, out)
	}
}

// fakeAdmin is a small real admin API: GET /sessions pages newest first
// through a cursor as the service's does, POST /sessions/<id>/redeliver
// moves a failed request to decided (or fails for the ids in refuse), and
// every route wants the bearer token when one is set.
type fakeAdmin struct {
	token  string
	refuse map[string]int // id -> status the redeliver answers with

	mu          sync.Mutex
	failed      map[string]bool
	redelivered map[string]int
	auths       []string // the Authorization header of every request
	url         string
}

func startFakeAdmin(t *testing.T, token string, failed int, refuse map[string]int) *fakeAdmin {
	t.Helper()
	f := &fakeAdmin{token: token, refuse: refuse, failed: map[string]bool{}, redelivered: map[string]int{}}
	for i := range failed {
		f.failed[fmt.Sprintf("0190a6f2-7c3b-7def-8a12-%012d", i)] = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	f.url = "http://" + ln.Addr().String()
	return f
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auths = append(f.auths, r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/json")
	if f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
		w.WriteHeader(401)
		_, _ = w.Write([]byte(`{"status":"failed","error":"unauthorized"}`))
		return
	}
	rec := func(id, state string) map[string]any {
		return map[string]any{"request_id": id, "state": state, "station_id": "123e4567-e89b-12d3-a456-426614174000", "driver_token": "vali...4567"}
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/sessions":
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if limit < 1 || limit > 10000 || r.URL.Query().Get("state") != "failed" {
			w.WriteHeader(400)
			return
		}
		cursor := r.URL.Query().Get("cursor")
		var ids []string
		for id := range f.failed {
			if cursor == "" || id < cursor {
				ids = append(ids, id)
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(ids)))
		body := map[string]any{}
		if len(ids) > limit {
			ids = ids[:limit]
			body["next_cursor"] = ids[limit-1]
		}
		var page []map[string]any
		for _, id := range ids {
			page = append(page, rec(id, "failed"))
		}
		body["sessions"], body["count"] = page, len(page)
		_ = json.NewEncoder(w).Encode(body)
	case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/redeliver"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/sessions/"), "/redeliver")
		f.redelivered[id]++
		if code := f.refuse[id]; code != 0 {
			w.WriteHeader(code)
			_, _ = w.Write([]byte(`{"status":"failed","error":"refused by the test"}`))
			return
		}
		if !f.failed[id] {
			w.WriteHeader(409)
			return
		}
		delete(f.failed, id)
		w.WriteHeader(202)
		_ = json.NewEncoder(w).Encode(rec(id, "decided"))
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/sessions/"):
		_ = json.NewEncoder(w).Encode(rec(strings.TrimPrefix(r.URL.Path, "/sessions/"), "failed"))
	default:
		w.WriteHeader(404)
	}
}

// redeliver --state failed goes through every failed request, page after
// page (more than a page of the admin API, more than the old 20), goes on
// past the ones that fail, prints how many were redelivered and which
// failed, and exits 1 because some did.
func TestRedeliverAllPagesAndGoesOn(t *testing.T) {
	bad1, bad2 := "0190a6f2-7c3b-7def-8a12-000000001000", "0190a6f2-7c3b-7def-8a12-000000000003"
	f := startFakeAdmin(t, "", 1203, map[string]int{bad1: 500, bad2: 409})
	code, stdout, stderr := runCmd(t, "sessions", "redeliver", "--state", "failed", "--admin-url", f.url)
	if code != 1 {
		t.Errorf("exit %d, want 1: two failed (stderr %q)", code, stderr)
	}
	if !strings.Contains(stdout, "redelivered 1201 of 1203; 2 failed\n") {
		t.Errorf("no summary in %q", tail(stdout))
	}
	for _, id := range []string{bad1, bad2} {
		if !regexp.MustCompile(`(?m)^  ` + id + `: admin API: \d{3} `).MatchString(stdout) {
			t.Errorf("the failed %s is not listed: %q", id, tail(stdout))
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.redelivered) != 1203 {
		t.Errorf("%d requests redelivered, want all 1203", len(f.redelivered))
	}
	for id, n := range f.redelivered {
		if n != 1 {
			t.Errorf("%s redelivered %d times", id, n)
		}
	}
	if len(f.failed) != 2 {
		t.Errorf("%d still failed, want the 2 refused", len(f.failed))
	}
}

// --limit caps a bulk redeliver; with none failing it exits 0; --json
// ends with a summary object.
func TestRedeliverAllLimitAndJSON(t *testing.T) {
	f := startFakeAdmin(t, "", 30, nil)
	code, stdout, stderr := runCmd(t, "sessions", "redeliver", "--state", "failed", "--limit", "7", "--json", "--admin-url", f.url)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 8 {
		t.Fatalf("%d lines, want 7 records and a summary: %s", len(lines), stdout)
	}
	var sum struct {
		Redelivered int               `json:"redelivered"`
		Failed      []json.RawMessage `json:"failed"`
	}
	if err := json.Unmarshal([]byte(lines[7]), &sum); err != nil || sum.Redelivered != 7 || sum.Failed == nil || len(sum.Failed) != 0 {
		t.Errorf("summary %s (%v): want 7 redelivered, failed []", lines[7], err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.redelivered) != 7 {
		t.Errorf("%d redelivered, want 7", len(f.redelivered))
	}
	for id := range f.redelivered {
		if id < "0190a6f2-7c3b-7def-8a12-000000000023" {
			t.Errorf("%s redelivered: not among the 7 newest", id)
		}
	}
}

// The sessions commands send the admin token from CHARGEAUTH_ADMIN_TOKEN or
// from --admin-token-file (surrounding white space dropped, as serve does;
// not both), and
// never print it; without it a protected admin API's 401 is explained.
func TestSessionsSendAdminToken(t *testing.T) {
	const token = "s3cr3t-admin-token-0123456789"
	f := startFakeAdmin(t, token, 1, nil)
	id := "0190a6f2-7c3b-7def-8a12-000000000000"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		want     string
	}{
		{"variable", map[string]string{"CHARGEAUTH_ADMIN_TOKEN": token}, nil, 0, id},
		{"file flag", nil, []string{"--admin-token-file", file}, 0, id},
		{"file variable", map[string]string{"CHARGEAUTH_ADMIN_TOKEN_FILE": file}, nil, 0, id},
		{"variable with a newline", map[string]string{"CHARGEAUTH_ADMIN_TOKEN": token + "\n"}, nil, 0, id},
		{"both", map[string]string{"CHARGEAUTH_ADMIN_TOKEN": "not-the-token"}, []string{"--admin-token-file", file}, 2, "--admin-token-file and $CHARGEAUTH_ADMIN_TOKEN are both set: set one"},
		{"none", nil, nil, 1, "401 unauthorized: set CHARGEAUTH_ADMIN_TOKEN or --admin-token-file"},
		{"wrong", nil, []string{"--admin-token-file", wrong}, 1, "401 unauthorized: the admin token sent is not the service's"},
		{"empty file", nil, []string{"--admin-token-file", os.DevNull}, 2, "--admin-token-file " + os.DevNull + " is empty"},
		{"token with a space", map[string]string{"CHARGEAUTH_ADMIN_TOKEN": "a b"}, nil, 2, "cannot go in an HTTP header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CHARGEAUTH_ADMIN_TOKEN", "")
			t.Setenv("CHARGEAUTH_ADMIN_TOKEN_FILE", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{"sessions", "get", id, "--admin-url", f.url}, tc.args...)
			code, stdout, stderr := runCmd(t, args...)
			if code != tc.wantCode || !strings.Contains(stdout+stderr, tc.want) {
				t.Errorf("exit %d, output %q %q; want %d and %q", code, stdout, stderr, tc.wantCode, tc.want)
			}
			if strings.Contains(stdout+stderr, token) || strings.Contains(stdout+stderr, "not-the-token") {
				t.Errorf("a token was printed: %q %q", stdout, stderr)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := countOf(f.auths, "Bearer "+token); n != 4 {
		t.Errorf("%d requests carried the token, want 4 (variable, file flag, file variable, variable with a newline): %q", n, f.auths)
	}
}

// sessions reads none of serve's variables: with CHARGEAUTH_DATA_DIR
// exported for serve (and a directory it cannot read as a store), it still
// goes to the admin API of CHARGEAUTH_ADMIN_URL.
func TestSessionsIgnoreServeVariables(t *testing.T) {
	f := startFakeAdmin(t, "", 3, nil)
	t.Setenv("CHARGEAUTH_DATA_DIR", "/nonexistent/data")
	t.Setenv("CHARGEAUTH_ADMIN_LISTEN", "127.0.0.1:1")
	t.Setenv("CHARGEAUTH_LIMIT", "1")
	t.Setenv("CHARGEAUTH_ADMIN_URL", f.url)
	code, stdout, stderr := runCmd(t, "sessions", "list", "--state", "failed", "--json")
	if code != 0 || strings.Count(stdout, "\n") != 3 {
		t.Errorf("exit %d, %q %q: want the 3 records of the admin API at $CHARGEAUTH_ADMIN_URL", code, stdout, stderr)
	}
}

func countOf(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

func tail(s string) string {
	if len(s) > 400 {
		return "..." + s[len(s)-400:]
	}
	return s
}

// A second serve on a held data directory exits 2 naming the holder's pid;
// sessions --data-dir says the same and names the admin URL to use instead.
// Once the service stopped, sessions --data-dir reads the store and prints
// no Pebble line.
func TestDataDirInUse(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0", "--data-dir", dataDir)
	admin := p.addr(t, "admin listener")
	inUse := fmt.Sprintf("data directory %s is in use by another chargeauth (pid %d)", dataDir, p.cmd.Process.Pid)

	second := exec.Command(binary(t), "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0", "--data-dir", dataDir)
	out, err := second.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("second serve: %v, want exit 2: %s", err, out)
	}
	if !strings.Contains(string(out), "chargeauth serve: "+inUse+"\n") {
		t.Errorf("second serve said %q, want %q", out, inUse)
	}

	code, stdout, stderr := runBinary(t, []string{"CHARGEAUTH_ADMIN_URL=http://" + admin}, "sessions", "list", "--data-dir", dataDir)
	if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, inUse) || !strings.Contains(stderr, "drop --data-dir") || !strings.Contains(stderr, "http://"+admin) {
		t.Errorf("sessions --data-dir on a served directory: exit %d, %q %q; want 2 and one line naming pid and admin URL", code, stdout, stderr)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	code, stdout, stderr = runBinary(t, nil, "sessions", "list", "--data-dir", dataDir)
	if code != 0 || !strings.HasPrefix(stdout, "REQUEST_ID") || stderr != "" {
		t.Errorf("sessions --data-dir on a stopped store: exit %d, %q, stderr %q: want 0, a table, nothing on stderr", code, stdout, stderr)
	}
}

// runBinary runs the built chargeauth with extra variables to its end.
func runBinary(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// lines sends each line r gives on the channel.
func lines(r io.Reader) <-chan string {
	c := make(chan string, 100)
	go func() {
		defer close(c)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c <- sc.Text()
		}
	}()
	return c
}

func nextLine(t *testing.T, c <-chan string, what string) string {
	t.Helper()
	select {
	case l, ok := <-c:
		if !ok {
			t.Fatalf("%s: the output ended", what)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nothing printed", what)
	}
	return ""
}

// chargeauth sink --secret (here from CHARGEAUTH_SINK_SECRET) checks the
// signature of each callback: a real serve signing with the same secret is
// valid; another secret's signature and an unsigned callback are invalid,
// with the reason. sink reads its own variables, not serve's
// CHARGEAUTH_LISTEN or CHARGEAUTH_CALLBACK_SECRET.
func TestSinkVerifiesSignatures(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	sinkCmd := exec.Command(binary(t), "sink")
	sinkCmd.Env = append(os.Environ(), "CHARGEAUTH_SINK_SECRET="+secret, "CHARGEAUTH_SINK_LISTEN=127.0.0.1:0",
		"CHARGEAUTH_LISTEN=not-an-address", "CHARGEAUTH_CALLBACK_SECRET="+other)
	stdout, _ := sinkCmd.StdoutPipe()
	stderr, _ := sinkCmd.StderrPipe()
	if err := sinkCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sinkCmd.Process.Kill(); _ = sinkCmd.Wait() })
	m := regexp.MustCompile(`^sink listening on (\S+), answering 204, checking signatures with 1 secret\(s\)$`).FindStringSubmatch(nextLine(t, lines(stderr), "sink"))
	if m == nil {
		t.Fatal("the sink's first line does not give its address and that it checks signatures")
	}
	sinkAddr := m[1]
	printed := lines(stdout)

	// A real service, signing with the same secret.
	p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--allow-private-callbacks", "--callback-secret", secret)
	body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","callback_url":"http://` + sinkAddr + `/cb"}`
	resp, err := http.Post("http://"+p.addr(t, "public listener")+"/charge_point/session/", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if l := nextLine(t, printed, "the service's callback"); !strings.Contains(l, " signature=valid ") || !strings.Contains(l, `"status":"allowed"`) {
		t.Errorf("the service's callback: %q, want signature=valid", l)
	}

	// Signed with another secret, and unsigned.
	wh, err := standardwebhooks.NewWebhook(other)
	if err != nil {
		t.Fatal(err)
	}
	cb := []byte(`{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"validDriverToken1234567","status":"allowed"}`)
	sig, _ := wh.Sign("0190a6f2-7c3b-7def-8a12-3456789abcde", time.Now(), cb)
	for _, tc := range []struct{ sig, want string }{
		{sig, " signature=invalid(no signature matches the secret) "},
		{"", " signature=invalid(missing webhook-id, webhook-timestamp or webhook-signature) "},
	} {
		req, _ := http.NewRequest("POST", "http://"+sinkAddr+"/cb", strings.NewReader(string(cb)))
		req.Header.Set("webhook-id", "0190a6f2-7c3b-7def-8a12-3456789abcde")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
		if tc.sig != "" {
			req.Header.Set("webhook-signature", tc.sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if l := nextLine(t, printed, tc.want); !strings.Contains(l, tc.want) {
			t.Errorf("printed %q, want %q", l, tc.want)
		}
	}
}

// The standalone authorization service reads CHARGEAUTH_AUTHZ_<FLAG>, not
// serve's CHARGEAUTH_LISTEN or CHARGEAUTH_ACL.
func TestAuthzReadsOwnVariables(t *testing.T) {
	cmd := exec.Command(binary(t), "authz")
	cmd.Env = append(os.Environ(), "CHARGEAUTH_LISTEN=not-an-address", "CHARGEAUTH_ACL=/nonexistent/acl.json",
		"CHARGEAUTH_AUTHZ_LISTEN=127.0.0.1:0")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	l := nextLine(t, lines(stderr), "authz")
	if !strings.Contains(l, `"msg":"authorization service listener"`) || !strings.Contains(l, `"addr":"127.0.0.1:`) {
		t.Errorf("authz printed %q, want it listening on $CHARGEAUTH_AUTHZ_LISTEN", l)
	}
}

// sessions get, human form: every field of the record, each transition and
// attempt with its time, durations in human units (the JSON has
// milliseconds), text with control characters quoted, and a field the
// CLI does not know still shown.
func TestSessionsGetHumanForm(t *testing.T) {
	const id = "0190a6f2-7c3b-7def-8a12-3456789abcde"
	rec := `{"request_id":"` + id + `","state":"failed","status":"allowed","reason":"ok_by_acl","decided_by":"authz",
	"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"vali...4567","callback_url":"http://127.0.0.1:1/cb",
	"accepted_at":"2026-12-05T09:00:00Z","decided_at":"2026-12-05T09:00:00.2Z","callback_attempts":2,
	"last_error":"500 Internal Server Error","failed_at":"2026-12-05T09:00:06Z","new_field":"shown",
	"transitions":[{"state":"pending","at":"2026-12-05T09:00:00Z"},{"state":"decided","at":"2026-12-05T09:00:00.2Z"},{"state":"failed","at":"2026-12-05T09:00:06Z"}],
	"attempts":[{"at":"2026-12-05T09:00:00.6Z","error":"dial tcp: connection refused","duration_ms":0.35},
	{"at":"2026-12-05T09:00:06Z","status_code":500,"duration_ms":1234.5,"response":"oops\n\u001b[31m"}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sessions/"+id {
			w.WriteHeader(404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, rec)
	}))
	t.Cleanup(srv.Close)
	code, out, stderr := runCmd(t, "sessions", "get", id, "--admin-url", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^request_id:\s+` + id + `$`),
		regexp.MustCompile(`(?m)^state:\s+failed$`),
		regexp.MustCompile(`(?m)^reason:\s+ok_by_acl$`),
		regexp.MustCompile(`(?m)^last_error:\s+500 Internal Server Error$`),
		regexp.MustCompile(`(?m)^new_field:\s+shown$`),
		regexp.MustCompile(`(?m)^transitions \(3\):\n  1\. pending  2026-12-05T09:00:00Z\n  2\. decided  2026-12-05T09:00:00.2Z\n  3\. failed  2026-12-05T09:00:06Z$`),
		regexp.MustCompile(`(?m)^transitions \(3\):\n(?:.*\n){3}attempts \(2\):\n`),
		regexp.MustCompile(`(?m)^  1\. 2026-12-05T09:00:00.6Z  duration=350µs  error=dial tcp: connection refused$`),
		regexp.MustCompile(`(?m)^  2\. 2026-12-05T09:00:06Z  duration=1.2s  response="oops\\n\\x1b\[31m"  status_code=500$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	// --json is the record as the admin API gave it: milliseconds.
	if _, out, _ := runCmd(t, "sessions", "get", id, "--admin-url", srv.URL, "--json"); !strings.Contains(out, `"duration_ms":1234.5`) {
		t.Errorf("--json: %s", out)
	}
	for ms, want := range map[float64]string{0.35: "350µs", 350: "350ms", 1234.5: "1.2s", 90_000: "1m30s"} {
		if got := humanMillis(ms); got != want {
			t.Errorf("humanMillis(%v) = %s, want %s", ms, got, want)
		}
	}
}
