package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// Config configures a Sender. The zero value is usable.
type Config struct {
	// Secrets are Standard Webhooks secrets, "whsec_<base64>". Each one
	// signs every callback: the webhook-signature header lists one "v1,..."
	// per secret, so a receiver can rotate without losing messages.
	//
	// Default: none (no webhook-signature header).
	Secrets []string

	// AllowPrivate lets callbacks reach loopback, private, link-local,
	// unspecified, multicast and reserved addresses (the checks happen at
	// dial time, after DNS resolution).
	//
	// Default: false (refused with ErrForbiddenDestination).
	AllowPrivate bool

	// AllowCIDRs opens these ranges even where the policy refuses them
	// (e.g. one private network of receivers), without AllowPrivate.
	//
	// Default: none.
	AllowCIDRs []netip.Prefix

	// OwnListeners are this service's listen addresses (host:port, as
	// bound: public, admin, embedded authorization service). A callback
	// to one of them is always refused, whatever AllowPrivate and
	// AllowCIDRs allow; one bound to an unspecified address (0.0.0.0, ::)
	// is reached through every address of the host. See guard.go.
	//
	// Default: none.
	OwnListeners []string

	// CAFile is a PEM file of extra root certificates trusted for HTTPS
	// callbacks, beside the system roots.
	//
	// Default: "" (system roots only).
	CAFile string

	// Timeout bounds one attempt: resolve, connect, TLS, request, response.
	// Send's deadline bounds it too; the earlier one wins.
	//
	// Default: 10s.
	Timeout time.Duration

	// MaxConnsPerHost bounds the connections kept to one callback host. A
	// Send that finds them all busy waits for one, within its deadline.
	//
	// Default: 16.
	MaxConnsPerHost int

	// Logger receives one Debug record per attempt (Warn for a forbidden
	// destination). Driver tokens are masked.
	//
	// Default: slog.Default().
	Logger *slog.Logger

	// Test-only knobs.
	now        func() time.Time     // webhook-timestamp clock; default time.Now
	tlsConfig  *tls.Config          // default: nil (system roots)
	connecting func(netip.AddrPort) // called just before each connect
}

// Defaults.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxConnsPerHost = 16
)

// maxResponseBody is how much of a receiver's answer is read. Only its
// start is kept (Result.Response); a longer one only costs the connection
// (see Send).
const maxResponseBody = 64 << 10

// maxRetryAfter caps a receiver's Retry-After.
const maxRetryAfter = 24 * time.Hour

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxConnsPerHost == 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
}

// Validate reports every problem in c, joined. Zero values are valid (they
// mean the default).
func (c Config) Validate() error {
	var errs []error
	for i, s := range c.Secrets {
		if _, err := ParseSecret(s); err != nil {
			errs = append(errs, fmt.Errorf("webhook: secret %d: %w", i+1, err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("webhook: timeout %v is negative", c.Timeout))
	}
	if c.MaxConnsPerHost < 0 {
		errs = append(errs, fmt.Errorf("webhook: max conns per host %d is negative", c.MaxConnsPerHost))
	}
	return errors.Join(errs...)
}

// Sender sends callbacks. It keeps connections alive per host and is safe
// for concurrent use.
type Sender struct {
	cfg     Config
	secrets [][]byte
	client  *fasthttp.Client
	log     *slog.Logger
	self    *selfGuard // the host's own addresses and listeners (guard.go)
}

// New validates cfg and returns a Sender.
func New(cfg Config) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Sender{cfg: cfg, log: cfg.Logger}
	self, err := newSelfGuard(cfg.OwnListeners, nil)
	if err != nil {
		return nil, err
	}
	s.self = self
	for _, sec := range cfg.Secrets {
		key, _ := ParseSecret(sec) // validated above
		s.secrets = append(s.secrets, key)
	}
	if cfg.CAFile != "" && cfg.tlsConfig == nil {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook: CA file %s: no PEM certificate in it", cfg.CAFile)
		}
		cfg.tlsConfig = &tls.Config{RootCAs: pool}
		s.cfg.tlsConfig = cfg.tlsConfig
	}
	s.client = &fasthttp.Client{
		Name:                "chargeauth",
		DialTimeout:         s.dialChecked,
		TLSConfig:           cfg.tlsConfig,
		MaxConnsPerHost:     cfg.MaxConnsPerHost,
		MaxConnWaitTimeout:  cfg.Timeout,
		MaxResponseBodySize: maxResponseBody,
		RetryIfErr:          retryNothingWritten,
		// Errors never quote the receiver's answer (it may echo the token).
		ConfigureClient: func(hc *fasthttp.HostClient) error {
			hc.SecureErrorLogMessage = true
			return nil
		},
	}
	// Each resend skips one kept-alive connection the receiver closed;
	// there are at most MaxConnsPerHost of them, then a fresh one.
	s.client.MaxIdemponentCallAttempts = cfg.MaxConnsPerHost + 1
	return s, nil
}

// CloseIdleConnections closes the kept-alive connections not in use.
func (s *Sender) CloseIdleConnections() { s.client.CloseIdleConnections() }

// Result is the outcome of one attempt.
type Result struct {
	// StatusCode is the receiver's HTTP status, 0 if none arrived.
	StatusCode int
	// Err is nil exactly when the receiver answered 2xx.
	Err error
	// Retryable says whether another attempt may succeed: false for a bad
	// URL and a forbidden destination (ErrForbiddenDestination). Every
	// status other than 2xx is retried, 410 Gone included (DESIGN.md:
	// anything but a 2xx is retried).
	Retryable bool
	// RetryAfter is the receiver's Retry-After (seconds or HTTP date) on
	// a 429 or 503, capped at 24h; 0 if absent.
	RetryAfter time.Duration
	// Response is the start of the receiver's response body: a copy of
	// at most session.MaxResponseLog bytes, not cut inside a UTF-8
	// sequence, with the driver token masked wherever it appears (a
	// receiver may echo the callback). Any other byte is kept as sent:
	// escape it to show it. Never logged.
	Response string
}

var errBadURL = errors.New("callback: bad url")

// Send makes one attempt to POST the decision to req.CallbackURL, signed
// with every secret, and returns when the receiver answered, the attempt
// failed, or the earlier of deadline and now+Config.Timeout passed (a zero
// deadline means Config.Timeout alone). id is the webhook-id: the same on
// every attempt. Redirects are not followed.
func (s *Sender) Send(deadline time.Time, id string, req session.Request, status session.Status) Result {
	start := time.Now()
	host, res := s.send(start, deadline, id, req, status)
	s.logAttempt(host, id, req, status, res, time.Since(start))
	return res
}

func (s *Sender) send(start, deadline time.Time, id string, r session.Request, status session.Status) (string, Result) {
	u, err := url.Parse(r.CallbackURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", Result{Err: fmt.Errorf("%w %q", errBadURL, redactURL(r.CallbackURL, u))}
	}
	host := u.Host

	attemptDeadline := start.Add(s.cfg.Timeout)
	if !deadline.IsZero() && deadline.Before(attemptDeadline) {
		attemptDeadline = deadline
	}

	body := Body(r, status)
	ts := s.cfg.now().Unix()

	freq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(freq)
	fresp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(fresp)

	freq.SetRequestURI(r.CallbackURL)
	freq.Header.SetMethod(fasthttp.MethodPost)
	freq.Header.SetContentType("application/json")
	freq.Header.Set("webhook-id", id)
	var tsBuf [20]byte
	freq.Header.SetBytesV("webhook-timestamp", strconv.AppendInt(tsBuf[:0], ts, 10))
	if len(s.secrets) > 0 {
		sig := make([]byte, 0, len(s.secrets)*48)
		for i, key := range s.secrets {
			if i > 0 {
				sig = append(sig, ' ')
			}
			sig = appendSignature(sig, key, id, ts, body)
		}
		freq.Header.SetBytesV("webhook-signature", sig)
	}
	freq.SetBodyRaw(body)

	err = s.client.DoDeadline(freq, fresp, attemptDeadline)
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		// The status line and headers arrived; only the (ignored) body was
		// too long. fasthttp has closed the connection.
		err = nil
	}
	if err != nil {
		return host, Result{
			Err:       fmt.Errorf("callback: post to %s: %w", host, err),
			Retryable: !errors.Is(err, ErrForbiddenDestination),
		}
	}

	code := fresp.StatusCode()
	res := Result{StatusCode: code, Response: responseStart(fresp.Body(), r.DriverToken)}
	if code >= 200 && code <= 299 {
		return host, res
	}
	res.Err = fmt.Errorf("callback: status %d", code)
	res.Retryable = true
	if code == fasthttp.StatusTooManyRequests || code == fasthttp.StatusServiceUnavailable {
		res.RetryAfter = parseRetryAfter(fresp.Header.Peek(fasthttp.HeaderRetryAfter), s.cfg.now())
	}
	return host, res
}

// responseStart copies the start of a receiver's body for Result.Response.
// It allocates once for a non-empty body, and again only to mask a token.
func responseStart(body []byte, token string) string {
	if len(body) == 0 {
		return ""
	}
	b, cut := body, false
	if len(b) > session.MaxResponseLog {
		b, cut = b[:session.MaxResponseLog], true
		// Do not end in the middle of a UTF-8 sequence.
		i := len(b) - 1
		for i > 0 && len(b)-i < utf8.UTFMax && !utf8.RuneStart(b[i]) {
			i--
		}
		if !utf8.FullRune(b[i:]) {
			b = b[:i]
		}
	}
	s := string(b)
	if token == "" {
		return s
	}
	if strings.Contains(s, token) {
		s = strings.ReplaceAll(s, token, session.MaskToken(token))
	}
	if cut {
		// The token cut short by the end: more than MaskToken shows.
		for k := min(len(token)-1, len(s)); k > 4; k-- {
			if strings.HasSuffix(s, token[:k]) {
				s = s[:len(s)-k] + session.MaskToken(token)
				s = s[:min(len(s), session.MaxResponseLog)]
				break
			}
		}
	}
	return s
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
// Anything else, or a date in the past, is 0.
func parseRetryAfter(v []byte, now time.Time) time.Duration {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return 0
	}
	if n, err := strconv.ParseUint(string(v), 10, 64); err == nil {
		if n >= uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	if t, err := fasthttp.ParseHTTPDate(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// redactURL drops the user info of a callback URL, for errors and logs.
func redactURL(raw string, u *url.URL) string {
	if u == nil {
		if len(raw) > 64 {
			return raw[:64] + "..."
		}
		return raw
	}
	return u.Redacted()
}

func (s *Sender) logAttempt(host, id string, r session.Request, status session.Status, res Result, took time.Duration) {
	level := slog.LevelDebug
	if errors.Is(res.Err, ErrForbiddenDestination) {
		level = slog.LevelWarn
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", id),
		slog.String("station_id", r.StationID),
		slog.String("driver_token", session.MaskToken(r.DriverToken)),
		slog.String("status", string(status)),
		slog.String("callback_host", host),
		slog.Int("status_code", res.StatusCode),
		slog.Float64("took_ms", float64(took.Microseconds())/1000),
	}
	if res.Err != nil {
		attrs = append(attrs, slog.String("error", res.Err.Error()), slog.Bool("retryable", res.Retryable))
	}
	if res.RetryAfter > 0 {
		attrs = append(attrs, slog.Float64("retry_after_ms", float64(res.RetryAfter.Microseconds())/1000))
	}
	s.log.LogAttrs(ctx, level, "webhook: callback attempt", attrs...)
}
