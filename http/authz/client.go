package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// ErrNoAnswer is wrapped by every error Authorize returns: the service gave
// no usable answer (another status code, another body, a timeout, no
// connection). Callers test it with errors.Is.
var ErrNoAnswer = errors.New("authz: no answer")

// ClientConfig configures a Client.
type ClientConfig struct {
	// URL is the service's base URL, e.g. http://127.0.0.1:8081; the client
	// POSTs to URL+"/authorize". Required: absolute http or https with a
	// host, no user info, query or fragment.
	URL string
	// MaxConns caps the connections to the service. Calls beyond it wait
	// for a free connection until their deadline.
	// Default: 64.
	MaxConns int
	// Grace is how long past its deadline a call may still run before it
	// is cut off. Its answer comes too late to use, but the caller's slot
	// stays taken while the service may still be working on it, so a slow
	// service never has more calls at once than the caller's bound.
	// Default: 5s.
	Grace time.Duration

	// Batch makes concurrent calls share round trips: while calls are in
	// flight, the ones that arrive wait and go together in one POST
	// URL+"/authorize/batch" (see batch.go). A lone call still goes to
	// URL+"/authorize". Only for a service that has the batch endpoint
	// (the embedded one, `chargeauth authz`).
	Batch bool
	// MaxBatch caps the calls in one batch. Default: 128.
	MaxBatch int
	// BatchConns caps the batches in flight at once. Default: 1.
	BatchConns int
}

func (c *ClientConfig) setDefaults() {
	if c.MaxConns == 0 {
		c.MaxConns = 64
	}
	if c.Grace == 0 {
		c.Grace = 5 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 128
	}
	if c.BatchConns == 0 {
		c.BatchConns = 1
	}
}

// Validate reports what is wrong with c, after defaults.
func (c *ClientConfig) Validate() error {
	if c.MaxConns < 0 {
		return fmt.Errorf("authz: MaxConns %d: must not be negative", c.MaxConns)
	}
	if c.Grace < 0 {
		return fmt.Errorf("authz: Grace %v: must not be negative", c.Grace)
	}
	if c.MaxBatch < 0 || c.MaxBatch > maxBatchItems {
		return fmt.Errorf("authz: MaxBatch %d: must be 1 to %d", c.MaxBatch, maxBatchItems)
	}
	if c.BatchConns < 0 {
		return fmt.Errorf("authz: BatchConns %d: must not be negative", c.BatchConns)
	}
	_, _, err := parseBaseURL(c.URL)
	return err
}

// Client limits.
const (
	// maxResponseBodySize bounds what a misbehaving service can make us read.
	maxResponseBodySize = 64 << 10
	// maxConnWaitTimeout only lets the request's deadline bound the wait for
	// a free connection (fasthttp waits min(this, time left)).
	maxConnWaitTimeout = time.Hour
)

// Client calls the authorization service. It is safe for concurrent use and
// keeps connections alive between calls.
type Client struct {
	endpoint      string // base URL + "/authorize"
	batchEndpoint string // base URL + "/authorize/batch"
	grace         time.Duration
	hc            *fasthttp.HostClient

	batch *batcher // nil: one call per request
}

// NewClient returns a Client for the service at cfg.URL.
func NewClient(cfg ClientConfig) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, addr, _ := parseBaseURL(cfg.URL)
	c := &Client{
		endpoint:      strings.TrimSuffix(u.String(), "/") + "/authorize",
		batchEndpoint: strings.TrimSuffix(u.String(), "/") + "/authorize/batch",
		grace:         cfg.Grace,
		hc: &fasthttp.HostClient{
			Addr:                addr,
			IsTLS:               u.Scheme == "https",
			Name:                "chargeauth",
			MaxConns:            cfg.MaxConns,
			MaxConnWaitTimeout:  maxConnWaitTimeout,
			MaxResponseBodySize: maxResponseBodySize,
			// Errors never quote the request or the answer (tokens).
			SecureErrorLogMessage: true,
			// Authorize retries itself, only before the deadline: a retry
			// here would not know it.
			MaxIdemponentCallAttempts: 1,
			RetryIfErr: func(*fasthttp.Request, int, error) (resetTimeout, retry bool) {
				return false, false
			},
		},
	}
	if cfg.Batch {
		c.batch = &batcher{maxItems: cfg.MaxBatch, maxInflight: cfg.BatchConns}
	}
	return c, nil
}

// parseBaseURL checks raw and returns it parsed, with the host:port to dial.
func parseBaseURL(raw string) (*url.URL, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("authz: URL %q: %w", raw, err)
	}
	var port string
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return nil, "", fmt.Errorf("authz: URL %q: scheme must be http or https", raw)
	}
	switch {
	case u.Hostname() == "":
		return nil, "", fmt.Errorf("authz: URL %q: no host", raw)
	case u.User != nil:
		return nil, "", fmt.Errorf("authz: URL %q: user info is not supported", raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, "", fmt.Errorf("authz: URL %q: a base URL has no query or fragment", raw)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	return u, net.JoinHostPort(u.Hostname(), port), nil
}

// authorizeResponse is the body of a 200 from POST /authorize.
type authorizeResponse struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// Authorize asks the service about one request and waits for its answer
// until deadline. Any err wraps ErrNoAnswer; an "unknown" status is an
// answer, not an error. With ClientConfig.Batch, the call may share a
// round trip with concurrent ones (batch.go).
func (c *Client) Authorize(deadline time.Time, stationID, driverToken string) (session.Status, string, error) {
	if c.batch != nil {
		return c.authorizeBatched(deadline, stationID, driverToken)
	}
	return c.authorizeOne(deadline, stationID, driverToken)
}

// authorizeOne makes one call to POST /authorize.
func (c *Client) authorizeOne(deadline time.Time, stationID, driverToken string) (session.Status, string, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	req.SetRequestURI(c.endpoint)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	var buf [256]byte
	req.SetBody(appendRequestBody(buf[:0], stationID, driverToken))

	if err := c.roundTrip(req, resp, deadline, c.endpoint); err != nil {
		return "", "", err
	}
	if time.Now().After(deadline) {
		return "", "", fmt.Errorf("%w from %s: answered after the deadline: %w", ErrNoAnswer, c.endpoint, fasthttp.ErrTimeout)
	}
	var out authorizeResponse
	if err := json.Unmarshal(resp.Body(), &out); err != nil {
		return "", "", fmt.Errorf("%w from %s: bad body: %w", ErrNoAnswer, c.endpoint, err)
	}
	status := session.Status(out.Status)
	if !status.Valid() {
		return "", "", fmt.Errorf("%w from %s: bad status %q", ErrNoAnswer, c.endpoint, out.Status)
	}
	return status, out.Reason, nil
}

// roundTrip sends req to endpoint and reads resp, a 200. The call runs
// until the deadline plus the grace (see Grace). Both endpoints only read,
// so a call that failed before any answer (a kept-alive connection the
// service closed meanwhile) is sent once more, but only while the deadline
// has not passed: the service never gets a call for a request already too
// late. An answer after the deadline is the caller's to refuse. Its errors
// wrap ErrNoAnswer.
func (c *Client) roundTrip(req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time, endpoint string) error {
	if !time.Now().Before(deadline) {
		return fmt.Errorf("%w from %s: %w (deadline passed before the call)", ErrNoAnswer, endpoint, fasthttp.ErrTimeout)
	}
	for attempt := 1; ; attempt++ {
		err := c.hc.DoDeadline(req, resp, deadline.Add(c.grace))
		if err == nil {
			break
		}
		if attempt >= 2 || errors.Is(err, fasthttp.ErrTimeout) || !time.Now().Before(deadline) {
			return fmt.Errorf("%w from %s: %w", ErrNoAnswer, endpoint, err)
		}
		resp.Reset()
	}
	if code := resp.StatusCode(); code != fasthttp.StatusOK {
		return fmt.Errorf("%w from %s: HTTP status %d", ErrNoAnswer, endpoint, code)
	}
	return nil
}

// appendRequestBody appends {"station_id":...,"driver_token":...} to b.
func appendRequestBody(b []byte, stationID, driverToken string) []byte {
	b = append(b, `{"station_id":`...)
	b = session.AppendJSONString(b, stationID)
	b = append(b, `,"driver_token":`...)
	b = session.AppendJSONString(b, driverToken)
	return append(b, '}')
}
