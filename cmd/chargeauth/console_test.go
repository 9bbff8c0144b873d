package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/chargeauth/chargeauth/internal/testwait"
)

// chromiumPath finds Debian's Chromium. Without it the browser test skips,
// saying why, except under CI=true, where .ci/run installs it and its
// absence is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not on PATH under CI=true: .ci/run installs Debian's chromium for the console's browser test")
		}
		t.Skip("chromium is not on PATH: install Debian's chromium (apt-get install chromium) to run the console's browser test")
	}
	return p
}

// switchReceiver is a callback receiver that answers 503 while fail is set
// and 200 otherwise, and counts the deliveries it accepted by webhook-id.
type switchReceiver struct {
	fail atomic.Bool
	mu   sync.Mutex
	ok   map[string]int
}

func (s *switchReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if s.fail.Load() {
		http.Error(w, "receiver down for maintenance", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	if s.ok == nil {
		s.ok = map[string]int{}
	}
	s.ok[r.Header.Get("webhook-id")]++
	s.mu.Unlock()
	fmt.Fprint(w, `{"received":true}`)
}

func (s *switchReceiver) delivered(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok[id]
}

// screenshotDir is where the browser test leaves its screenshots:
// $CHARGEAUTH_SCREENSHOTS, or testdata/out/console (ignored by git).
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CHARGEAUTH_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("testdata", "out", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The console, driven by a real browser against the real binary: log in
// (a wrong token first), see requests posted through the public API on the
// overview and in the list, open one, make the receiver fail, find the
// failed sessions with the filters, redeliver them from the page once the
// receiver is back and see them delivered, reload the ACL, log out. The
// page must never hit a script error or a Content-Security-Policy
// violation, the cookie must be HttpOnly and SameSite=Strict, and the
// admin token must appear in no log line. Screenshots of each page (wide,
// phone, dark) are saved as the test's output.
func TestConsoleInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	shots := screenshotDir(t)
	const token = "console-test-admin-token-3f9a2c71e4"
	aclPath := filepath.Join(t.TempDir(), "acl.json")
	if err := os.WriteFile(aclPath, []byte(`{"entries":[
		{"driver_token":"validDriverToken1234567","status":"active"},
		{"driver_token":"blockedDriverToken12345","status":"blocked"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	recv := &switchReceiver{}
	recvSrv := httptest.NewServer(recv)
	defer recvSrv.Close()

	t.Setenv("CHARGEAUTH_ADMIN_TOKEN", token)
	p := start(t, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--authz-listen", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--acl", aclPath, "--allow-private-callbacks",
		"--callback-schedule", "0s,100ms", "--callback-max-attempts", "2")
	public := "http://" + p.addr(t, "public listener")
	admin := "http://" + p.addr(t, "admin listener")

	post := func(driver, callback string) string {
		t.Helper()
		body := `{"station_id":"123e4567-e89b-12d3-a456-426614174000","driver_token":"` + driver + `","callback_url":"` + callback + `"}`
		res, err := http.Post(public+"/charge_point/session/", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out struct {
			RequestID string `json:"request_id"`
		}
		if res.StatusCode != http.StatusAccepted || json.NewDecoder(res.Body).Decode(&out) != nil {
			t.Fatalf("POST: %d", res.StatusCode)
		}
		return out.RequestID
	}
	// adminCount counts the sessions in a state through the admin API.
	adminCount := func(state string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", admin+"/sessions?limit=1000&state="+state, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out struct{ Count int }
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out.Count
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"), chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil { // starts the browser, without a timeout
		t.Fatalf("start chromium: %v", err)
	}
	var problems struct {
		sync.Mutex
		list []string
	}
	messages := chromedp.Console(browser)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// 401s are expected: the wrong token, and the read after logout.
			expected := strings.Contains(m.Text, "status of 401")
			if !expected && (m.IsException() || m.Type == chromedp.ConsoleError || strings.Contains(m.Text, "Content Security Policy")) {
				problems.Lock()
				problems.list = append(problems.list, m.String())
				problems.Unlock()
			}
		}
	}()

	// step runs actions with a bound; on failure it saves a screenshot.
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			if png, err2 := chromedp.Run(browser, chromedp.FullScreenshot(100)); err2 == nil {
				_ = os.WriteFile(filepath.Join(shots, "failed.png"), png, 0o644)
			}
			t.Fatalf("%s: %v\nservice log: %s", what, err, tail(p.logs()))
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(shots, name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", path)
	}
	text := func(id string) string {
		t.Helper()
		s, err := chromedp.Run(browser, chromedp.TextContent(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("text of #%s: %v", id, err)
		}
		return s
	}
	until := func(what, js string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(50*time.Millisecond),
				chromedp.WithPollingTimeout(25*time.Second))(ctx, tg)
			if err != nil {
				err = fmt.Errorf("waiting until %s: %w", what, err)
			}
			return chromedp.Void{}, err
		}
	}
	rows := func(n int) string {
		return fmt.Sprintf(`document.querySelector('#sessions').getAttribute('aria-busy') === null && document.querySelectorAll('#sessions tbody tr').length === %d`, n)
	}

	// Log in: / leads to the login form; a wrong token is refused.
	step("login page", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	shot("01-login")
	step("wrong token", chromedp.SendKeys(chromedp.ID("token"), "not-the-token"), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("login-error")))
	step("log in", chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("view-overview")))
	cookies, err := chromedp.Call(browser, network.GetCookies, network.GetCookiesParams{URLs: []string{admin + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cookies.Cookies) != 1 {
		t.Fatalf("cookies %+v, want the one session cookie", cookies.Cookies)
	}
	if c := cookies.Cookies[0]; c.Name != "chargeauth_console" || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict ||
		c.Secure || strings.Contains(c.Value, token) || len(c.Value) < 40 {
		t.Fatalf("session cookie %s=%q httpOnly=%v sameSite=%q secure=%v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP, a random id",
			c.Name, c.Value, c.HTTPOnly, c.SameSite, c.Secure)
	}

	// Requests posted through the public API show on the overview.
	cb := recvSrv.URL + "/cb"
	local := strings.Replace(recvSrv.URL, "127.0.0.1", "localhost", 1) + "/cb"
	var ids []string
	for _, d := range []string{"validDriverToken1234567", "validDriverToken1234567", "validDriverToken1234567",
		"blockedDriverToken12345", "unknownDriverToken00000"} {
		ids = append(ids, post(d, cb))
	}
	localID := post("validDriverToken1234567", local)
	step("overview counts", until("6 accepted, 6 delivered", `document.getElementById('accepted-total').textContent === '6' &&
		document.getElementById('cb-delivered').textContent === '6' && document.querySelector('#spark-accepted path') !== null`))
	if got := text("rec-delivered"); got != "6" {
		t.Errorf("delivered records %q, want 6", got)
	}
	shot("02-overview")

	// The list shows them, newest first; the host filter finds the one
	// sent to localhost.
	step("list", chromedp.Click(chromedp.ID("nav-sessions")), until("6 rows", rows(6)))
	if first, _ := chromedp.Run(browser, chromedp.AttributeValue(chromedp.CSS("#sessions tbody tr"), "data-id")); first.Value != localID {
		t.Errorf("first row %q, want the newest request %s", first.Value, localID)
	}
	shot("03-sessions")
	step("host filter", chromedp.SendKeys(chromedp.ID("f-host"), "localhost"), chromedp.Click(chromedp.ID("f-apply")),
		until("1 row", rows(1)))
	step("reset", chromedp.Click(chromedp.ID("f-reset")), until("6 rows again", rows(6)))

	// One session: its transitions and attempts; the driver token masked.
	step("open one", chromedp.Click(chromedp.CSS(`#sessions tbody tr[data-id="`+ids[0]+`"] a`)),
		chromedp.WaitVisible(chromedp.ID("view-session")),
		until("delivered with one attempt", `document.getElementById('view-session').dataset.state === 'delivered' &&
			document.querySelectorAll('#s-attempts tbody tr').length === 1 && document.querySelectorAll('#s-transitions li').length === 3`))
	html, _ := chromedp.Run(browser, chromedp.OuterHTML(chromedp.CSS("html")))
	if strings.Contains(html, "validDriverToken1234567") || !strings.Contains(text("s-facts"), "vali****") {
		t.Errorf("the session page shows the driver token unmasked, or not at all: %s", text("s-facts"))
	}
	if a := text("s-attempts"); !strings.Contains(a, "HTTP 200") || !strings.Contains(a, " ms") {
		t.Errorf("attempts %q: want HTTP 200 and a duration in ms", a)
	}
	shot("04-session")

	// The receiver fails: three sessions end failed.
	recv.fail.Store(true)
	var failed []string
	for range 3 {
		failed = append(failed, post("validDriverToken1234567", cb))
	}
	testwait.Until(t, 20*time.Second, "3 failed sessions", func() bool { return adminCount("failed") == 3 })
	step("filter failed", chromedp.Click(chromedp.ID("nav-sessions")), until("list", rows(9)),
		chromedp.SetValue(chromedp.ID("f-state"), "failed"), chromedp.Click(chromedp.ID("f-apply")),
		until("3 failed rows", rows(3)+` && [...document.querySelectorAll('#sessions tbody tr')].every(r => r.dataset.state === 'failed')`),
		chromedp.WaitVisible(chromedp.ID("bulk-redeliver")))
	shot("05-failed")
	step("open a failed one", chromedp.Click(chromedp.CSS(`#sessions tbody tr[data-id="`+failed[0]+`"] a`)),
		until("two failed attempts", `document.getElementById('view-session').dataset.state === 'failed' &&
			document.querySelectorAll('#s-attempts tbody tr').length === 2`))
	if a := text("s-attempts"); !strings.Contains(a, "HTTP 503") || !strings.Contains(a, "receiver down for maintenance") {
		t.Errorf("attempts %q: want the receiver's 503 and the start of its answer", a)
	}
	shot("06-session-failed")

	// The receiver is back: redeliver every failed one from the page, after
	// a confirmation that names how many.
	recv.fail.Store(false)
	step("back to the failed", chromedp.NavigateBack(), until("3 failed rows", rows(3)),
		chromedp.Click(chromedp.ID("bulk-redeliver")), chromedp.WaitVisible(chromedp.ID("confirm")))
	if c := text("confirm-text"); !strings.Contains(c, "Redeliver 3 failed sessions") {
		t.Errorf("confirmation %q does not name the count", c)
	}
	shot("07-confirm")
	step("confirm", chromedp.Click(chromedp.ID("confirm-ok")),
		until("result", `document.getElementById('list-result').textContent.includes('3 sessions scheduled again')`))
	testwait.Until(t, 20*time.Second, "redelivered", func() bool {
		for _, id := range failed {
			if recv.delivered(id) == 0 {
				return false
			}
		}
		return adminCount("failed") == 0 && adminCount("delivered") == 9
	})
	step("none failed", chromedp.Click(chromedp.ID("f-apply")), until("no row", rows(0)),
		chromedp.WaitVisible(chromedp.ID("sessions-empty")))
	shot("08-redelivered")
	// The redelivered session tells its story: two failed attempts, the
	// redelivery, the delivered one.
	step("open a redelivered one", chromedp.Navigate(admin+"/console/#/sessions/"+failed[0]),
		until("delivered after a redelivery", `document.getElementById('view-session').dataset.state === 'delivered' &&
			document.querySelectorAll('#s-attempts tbody tr').length === 3 &&
			[...document.querySelectorAll('#s-transitions li')].some(li => li.textContent.includes('redelivered'))`))
	shot("08b-session-redelivered")
	step("back to the list", chromedp.NavigateBack(), chromedp.WaitVisible(chromedp.ID("view-sessions")))

	// Reload the ACL from the overview; both actions are listed with who.
	step("reload ACL", chromedp.Click(chromedp.ID("nav-overview")), chromedp.WaitVisible(chromedp.ID("acl-reload")),
		until("overview", `document.getElementById('cb-delivered').textContent === '9'`),
		chromedp.Click(chromedp.ID("acl-reload")),
		until("reloaded", `document.getElementById('acl-result').textContent.includes('reloaded: version')`),
		until("2 actions", `document.querySelectorAll('#actions tbody tr').length === 2`))
	if a := text("actions"); !strings.Contains(a, "console:") || !strings.Contains(a, "reload ACL") || !strings.Contains(a, "redeliver failed") {
		t.Errorf("recent actions %q: want both actions and who made them", a)
	}
	shot("09-overview")

	// The keyboard alone: Tab reaches the skip link first, with a visible
	// focus ring, then the brand and the navigation; Enter follows a link.
	focused := func(sel string) string {
		return `document.activeElement && document.activeElement.matches('` + sel + `') &&
			getComputedStyle(document.activeElement).outlineStyle !== 'none'`
	}
	step("keyboard", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("view-overview")),
		chromedp.KeyEvent("\t"), until("skip link focused", focused("a.skip")),
		chromedp.KeyEvent("\t"), chromedp.KeyEvent("\t"), chromedp.KeyEvent("\t"), until("Sessions focused", focused("#nav-sessions")),
		chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.ID("view-sessions")), until("list", rows(9)),
		chromedp.Click(chromedp.ID("nav-overview")), chromedp.WaitVisible(chromedp.ID("view-overview")))

	// A phone, and the dark scheme.
	step("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		until("laid out", `document.getElementById('accepted-total').textContent === '9'`))
	shot("10-phone-overview")
	step("phone list", chromedp.Click(chromedp.ID("nav-sessions")), until("9 rows", rows(9)))
	shot("11-phone-sessions")
	step("dark", chromedp.EmulateViewport(1280, 900), chromedp.Click(chromedp.ID("nav-overview")),
		until("overview", `document.getElementById('accepted-total').textContent === '9'`))
	if _, err := chromedp.Call(browser, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	step("dark scheme", until("dark", `matchMedia('(prefers-color-scheme: dark)').matches &&
		getComputedStyle(document.body).backgroundColor === 'rgb(13, 17, 23)'`))
	shot("12-dark-overview")

	// Log out: the cookie no longer opens the admin API.
	step("log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	status, err := chromedp.Run(browser, chromedp.Evaluate[int](`fetch('/sessions').then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusUnauthorized {
		t.Errorf("GET /sessions after logout: %d %v, want 401", status, err)
	}

	problems.Lock()
	if len(problems.list) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(problems.list, "\n"))
	}
	problems.Unlock()
	logs := p.logs()
	if strings.Contains(logs, token) {
		t.Error("the admin token reached a log line")
	}
	for _, want := range []string{`"msg":"console login"`, `"msg":"console login refused"`, `"action":"reload ACL"`, `"who":"console:`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line with %s", want)
		}
	}
}
