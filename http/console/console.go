package console

import (
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

//go:embed assets
var assets embed.FS

// Config wires the console to the service. The funcs are called from
// request handlers and must be safe for concurrent use.
type Config struct {
	// Token is the admin token; "" leaves the console open (as the admin
	// API is, on a loopback-only listener). Default: "".
	Token string
	// Gatherer is the metrics registry the overview samples. Required.
	Gatherer prometheus.Gatherer
	// Health is the readiness check (nil: ready), shown as the store's and
	// the node's state. Default: always ready.
	Health func() error
	// Disk reports the free and total bytes of the store's filesystem.
	// Default: nil, not shown.
	Disk func() (free, total uint64, err error)
	// Redeliver starts delivery again for a failed session. Required.
	Redeliver func(id string) (session.Record, error)
	// Failed lists the ids of the failed sessions accepted in [since,
	// until) (zero: no bound) whose callback URL's host is host ("": any),
	// at most limit of them. Required.
	Failed func(since, until time.Time, host string, limit int) ([]string, error)
	// ReloadACL reloads the embedded authorization service's ACL file.
	// Default: nil, the console says the ACL cannot be reloaded from here.
	ReloadACL func() error
	// SessionTTL is how long a login lasts. Default: 12h.
	SessionTTL time.Duration
	// SampleEvery is the overview's sampling interval. Default: 2s.
	SampleEvery time.Duration
	// Samples is how many samples the ring keeps. Default: 300 (ten
	// minutes at 2s).
	Samples int
	// Logger. Default: slog.Default().
	Logger *slog.Logger

	now func() time.Time // test-only clock
}

func (c *Config) setDefaults() {
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = 2 * time.Second
	}
	if c.Samples == 0 {
		c.Samples = 300
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Health == nil {
		c.Health = func() error { return nil }
	}
	if c.now == nil {
		c.now = time.Now
	}
}

// Validate reports the first missing or invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Gatherer == nil:
		return errors.New("console: Gatherer is required")
	case c.Redeliver == nil || c.Failed == nil:
		return errors.New("console: Redeliver and Failed are required")
	case c.SessionTTL < 0 || c.SampleEvery < 0 || c.Samples < 0:
		return errors.New("console: SessionTTL, SampleEvery and Samples must not be negative")
	}
	return nil
}

// Console serves the console; Close stops its sampler.
type Console struct {
	cfg      Config
	log      *slog.Logger
	token    [sha256.Size]byte
	sessions *sessions
	sampler  *sampler
	actions  *actionLog
	login    *template.Template
	static   fs.FS

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// New starts the console's sampler.
func New(cfg Config) (*Console, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(assets, "assets")
	c := &Console{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "console"),
		token:    sha256.Sum256([]byte(cfg.Token)),
		sessions: newSessions(cfg.SessionTTL, cfg.now),
		sampler:  newSampler(cfg.Gatherer, cfg.Samples, cfg.now),
		actions:  &actionLog{},
		login:    template.Must(template.ParseFS(static, "login.html")),
		static:   static,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	c.sampler.take() // the first sample, before New returns
	go c.sample()
	return c, nil
}

// Close stops the sampler. The handler keeps answering (with the last
// samples) until the listener stops.
func (c *Console) Close() {
	c.stopOnce.Do(func() {
		close(c.stop)
		<-c.done
	})
}

func (c *Console) sample() {
	defer close(c.done)
	t := time.NewTicker(c.cfg.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.sampler.take()
		}
	}
}

// Owns reports whether path is the console's: "/", "/console" and
// everything under "/console/". The admin listener's guard lets these
// through; the console checks access itself (a login page, not a 401).
func Owns(path string) bool {
	return path == "/" || path == "/console" || strings.HasPrefix(path, "/console/")
}

// csp allows this origin only, and no inline script or style.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

func secureHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// Handle serves every path Owns.
func (c *Console) Handle(ctx *fasthttp.RequestCtx) {
	secureHeaders(ctx)
	p := string(ctx.Path())
	switch {
	case p == "/" || p == "/console":
		redirect(ctx, "/console/")
	case p == "/console/login":
		c.handleLogin(ctx)
	case p == "/console/logout":
		c.handleLogout(ctx)
	case strings.HasPrefix(p, "/console/assets/"):
		c.serveAsset(ctx, strings.TrimPrefix(p, "/console/assets/"))
	case p == "/console/":
		if _, ok := c.who(ctx); !ok {
			redirect(ctx, "/console/login")
			return
		}
		c.serveFile(ctx, "index.html")
	case strings.HasPrefix(p, "/console/api/"):
		c.api(ctx, strings.TrimPrefix(p, "/console/api/"))
	default:
		redirect(ctx, "/console/")
	}
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// serveAsset serves a file of assets/ but the pages (which need a login).
func (c *Console) serveAsset(ctx *fasthttp.RequestCtx, name string) {
	if path.Ext(name) == ".html" || !fs.ValidPath(name) {
		plain(ctx, fasthttp.StatusNotFound, "not found")
		return
	}
	c.serveFile(ctx, name)
}

func (c *Console) serveFile(ctx *fasthttp.RequestCtx, name string) {
	b, err := fs.ReadFile(c.static, name)
	ct, known := contentTypes[path.Ext(name)]
	if err != nil || !known {
		plain(ctx, fasthttp.StatusNotFound, "not found")
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET")
		plain(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if path.Ext(name) != ".html" {
		// Assets carry no secret; the browser may keep them but asks
		// again after a restart of the binary (a new build).
		ctx.Response.Header.Set("Cache-Control", "no-cache")
	}
	ctx.SetContentType(ct)
	ctx.SetBody(b)
}

// tokenMatches compares a presented token with the admin token in
// constant time, as SHA-256 digests (so its length does not show either).
func (c *Console) tokenMatches(tok []byte) bool {
	got := sha256.Sum256(tok)
	return subtle.ConstantTimeCompare(got[:], c.token[:]) == 1
}

// who names the caller for the action log ("console:<8 hex>" for a login
// session, "token" for the bearer token, "open" without an admin token) and
// says whether it may use the console.
func (c *Console) who(ctx *fasthttp.RequestCtx) (string, bool) {
	if c.cfg.Token == "" {
		return "open", true
	}
	if id := ctx.Request.Header.Cookie(cookieName); len(id) > 0 {
		if name, ok := c.sessions.valid(id); ok {
			return name, true
		}
	}
	const scheme = "bearer "
	auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	if len(auth) > len(scheme) && strings.EqualFold(string(auth[:len(scheme)]), scheme) &&
		c.tokenMatches([]byte(strings.TrimSpace(string(auth[len(scheme):])))) {
		return "token", true
	}
	return "", false
}

// AuthorizeRead reports whether a request to the admin API's other routes
// carries a valid console session cookie and only reads (GET or HEAD): the
// console's pages read /sessions and /sessions/<id> with it. Changes go
// through the console's own POST endpoints, which log who made them.
func (c *Console) AuthorizeRead(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	id := ctx.Request.Header.Cookie(cookieName)
	if len(id) == 0 {
		return false
	}
	_, ok := c.sessions.valid(id)
	return ok
}

// fromPage reports whether a POST was sent by the console's own script: it
// carries X-Requested-With, which a cross-site form cannot send and a
// cross-site script cannot send without a CORS preflight this listener
// never grants.
func fromPage(ctx *fasthttp.RequestCtx) bool {
	return len(ctx.Request.Header.Peek("X-Requested-With")) > 0
}

// sameOrigin reports whether a form POST came from a page of this origin:
// the browser's Sec-Fetch-Site or Origin say so (a client that sends
// neither, such as curl, is not a browser being tricked).
func sameOrigin(ctx *fasthttp.RequestCtx) bool {
	if site := string(ctx.Request.Header.Peek("Sec-Fetch-Site")); site != "" {
		return site == "same-origin" || site == "none"
	}
	origin := string(ctx.Request.Header.Peek("Origin"))
	if origin == "" || origin == "null" {
		return origin == ""
	}
	o, ok := strings.CutPrefix(origin, "http://")
	if !ok {
		o, _ = strings.CutPrefix(origin, "https://")
	}
	return o == string(ctx.Host())
}

type loginPage struct {
	Error string
}

func (c *Console) handleLogin(ctx *fasthttp.RequestCtx) {
	if _, ok := c.who(ctx); ok && !ctx.IsPost() {
		redirect(ctx, "/console/")
		return
	}
	switch {
	case ctx.IsGet() || ctx.IsHead():
		c.renderLogin(ctx, fasthttp.StatusOK, "")
	case ctx.IsPost():
		if !sameOrigin(ctx) {
			c.renderLogin(ctx, fasthttp.StatusForbidden, "This form was sent from another site.")
			return
		}
		if c.cfg.Token == "" {
			redirect(ctx, "/console/")
			return
		}
		tok := ctx.PostArgs().Peek("token")
		if len(tok) == 0 || !c.tokenMatches([]byte(strings.TrimSpace(string(tok)))) {
			c.log.Warn("console login refused", "remote", ctx.RemoteIP().String())
			c.renderLogin(ctx, fasthttp.StatusUnauthorized, "That is not the admin token.")
			return
		}
		id, name := c.sessions.create()
		c.setCookie(ctx, id, c.cfg.SessionTTL)
		c.log.Info("console login", "who", name, "remote", ctx.RemoteIP().String())
		redirect(ctx, "/console/")
	default:
		ctx.Response.Header.Set("Allow", "GET, POST")
		plain(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
	}
}

func (c *Console) renderLogin(ctx *fasthttp.RequestCtx, code int, msg string) {
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/html; charset=utf-8")
	if err := c.login.Execute(ctx, loginPage{Error: msg}); err != nil {
		c.log.Error("console: login page", "err", err)
	}
}

func (c *Console) handleLogout(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		plain(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if !fromPage(ctx) {
		writeError(ctx, fasthttp.StatusForbidden, "missing X-Requested-With header")
		return
	}
	if id := ctx.Request.Header.Cookie(cookieName); len(id) > 0 {
		if name, ok := c.sessions.end(id); ok {
			c.log.Info("console logout", "who", name)
		}
	}
	c.setCookie(ctx, "", -1)
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "logged out"})
}

const cookieName = "chargeauth_console"

// setCookie sets (ttl > 0) or clears the session cookie. Secure is set when
// the request came over TLS, or through a proxy that says it did.
func (c *Console) setCookie(ctx *fasthttp.RequestCtx, value string, ttl time.Duration) {
	ck := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(ck)
	ck.SetKey(cookieName)
	ck.SetValue(value)
	ck.SetPath("/")
	ck.SetHTTPOnly(true)
	ck.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	ck.SetSecure(ctx.IsTLS() || strings.EqualFold(string(ctx.Request.Header.Peek("X-Forwarded-Proto")), "https"))
	if ttl > 0 {
		ck.SetMaxAge(int(ttl / time.Second))
	} else {
		ck.SetMaxAge(-1) // delete
	}
	ctx.Response.Header.SetCookie(ck)
}

// plain answers a short text; unlike ctx.Error it keeps the headers set so
// far (the CSP).
func plain(ctx *fasthttp.RequestCtx, code int, msg string) {
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(msg)
}

// redirect answers 303 with a relative Location (fasthttp's Redirect would
// make it absolute from the Host header).
func redirect(ctx *fasthttp.RequestCtx, to string) {
	ctx.Response.Header.Set("Location", to)
	ctx.SetStatusCode(fasthttp.StatusSeeOther)
}

func writeError(ctx *fasthttp.RequestCtx, code int, msg string) {
	writeJSON(ctx, code, map[string]string{"status": "failed", "error": msg})
}
