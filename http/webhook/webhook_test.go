package webhook

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

// captured is what a receiver got in one request.
type captured struct {
	method, path, contentType, userAgent string
	id, ts, sig                          string
	hasSig                               bool
	body                                 []byte
}

// receiver is a fasthttp server on loopback that records what it gets.
type receiver struct {
	url     string // http://127.0.0.1:port
	srv     *fasthttp.Server
	accepts atomic.Int64

	mu   sync.Mutex
	reqs []captured
}

func (r *receiver) requests() []captured {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]captured(nil), r.reqs...)
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startReceiver serves handle (200 if nil) on 127.0.0.1:0 until the test ends.
func startReceiver(t *testing.T, handle fasthttp.RequestHandler) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveReceiver(t, ln, handle, nil, nil)
}

// serveReceiver serves handle on ln, over TLS when tlsCert is set; tweak
// may change the server before it starts.
func serveReceiver(t *testing.T, ln net.Listener, handle fasthttp.RequestHandler, tlsCert *tlsPair, tweak func(*fasthttp.Server)) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			sig := ctx.Request.Header.Peek("webhook-signature")
			r.mu.Lock()
			r.reqs = append(r.reqs, captured{
				method:      string(ctx.Method()),
				path:        string(ctx.Path()),
				contentType: string(ctx.Request.Header.ContentType()),
				userAgent:   string(ctx.UserAgent()),
				id:          string(ctx.Request.Header.Peek("webhook-id")),
				ts:          string(ctx.Request.Header.Peek("webhook-timestamp")),
				sig:         string(sig),
				hasSig:      sig != nil,
				body:        append([]byte(nil), ctx.PostBody()...),
			})
			r.mu.Unlock()
			if handle != nil {
				handle(ctx)
			}
		},
		Logger: discardLogger{},
	}
	if tweak != nil {
		tweak(r.srv)
	}
	scheme := "http"
	go func() {
		if tlsCert != nil {
			_ = r.srv.ServeTLSEmbed(countingListener{ln, &r.accepts}, tlsCert.cert, tlsCert.key)
			return
		}
		_ = r.srv.Serve(countingListener{ln, &r.accepts})
	}()
	if tlsCert != nil {
		scheme = "https"
	}
	r.url = scheme + "://" + ln.Addr().String()
	t.Cleanup(func() { _ = r.srv.Shutdown() })
	return r
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

func newSender(t *testing.T, cfg Config) *Sender {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.CloseIdleConnections)
	return s
}

const (
	testID      = "0190b6a4-7c2e-7b4e-9a3f-1c2d3e4f5a6b"
	testStation = "123e4567-e89b-12d3-a456-426614174000"
	testToken   = "drv~Token.with_all-chars~0123"
)

func testRequest(url string) session.Request {
	return session.Request{StationID: testStation, DriverToken: testToken, CallbackURL: url}
}

func soon() time.Time { return time.Now().Add(5 * time.Second) }

func mustDeliver(t *testing.T, res Result) {
	t.Helper()
	if res.Err != nil || res.StatusCode < 200 || res.StatusCode > 299 {
		t.Fatalf("want delivered, got %+v", res)
	}
}

func TestSendHeadersAndSignatures(t *testing.T) {
	rcv := startReceiver(t, nil)
	secret2 := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("k"), 32))
	fixed := time.Unix(1_750_000_000, 0)
	s := newSender(t, Config{
		Secrets:      []string{specSecret, secret2},
		AllowPrivate: true,
		now:          func() time.Time { return fixed },
	})

	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url+"/hook?x=1"), session.StatusAllowed))

	reqs := rcv.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	wantBody := `{"station_id":"` + testStation + `","driver_token":"` + testToken + `","status":"allowed"}`
	if string(got.body) != wantBody {
		t.Errorf("body\n got %s\nwant %s", got.body, wantBody)
	}
	for _, c := range []struct{ name, got, want string }{
		{"method", got.method, "POST"},
		{"path", got.path, "/hook"},
		{"content-type", got.contentType, "application/json"},
		{"user-agent", got.userAgent, "chargeauth"},
		{"webhook-id", got.id, testID},
		{"webhook-timestamp", got.ts, "1750000000"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	sigs := strings.Split(got.sig, " ")
	if len(sigs) != 2 {
		t.Fatalf("webhook-signature %q: want 2 space-separated signatures", got.sig)
	}
	for i, sec := range []string{specSecret, secret2} {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sec, "whsec_"))
		if err != nil {
			t.Fatal(err)
		}
		verifySignature(t, key, got.id, got.ts, got.body, sigs[i])
	}
}

func TestSendWithoutSecretsHasNoSignature(t *testing.T) {
	rcv := startReceiver(t, nil)
	s := newSender(t, Config{AllowPrivate: true})
	before := time.Now().Unix()
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url+"/"), session.StatusUnknown))
	after := time.Now().Unix()

	got := rcv.requests()[0]
	if got.hasSig {
		t.Errorf("webhook-signature %q sent without secrets", got.sig)
	}
	ts, err := strconv.ParseInt(got.ts, 10, 64)
	if err != nil || ts < before || ts > after {
		t.Errorf("webhook-timestamp %q, want unix seconds in [%d, %d]", got.ts, before, after)
	}
	if got.id != testID {
		t.Errorf("webhook-id %q, want %q", got.id, testID)
	}
}

func TestSendStatus(t *testing.T) {
	for _, tc := range []struct {
		code       int
		header     [2]string
		wantErr    bool
		retryable  bool
		retryAfter time.Duration
	}{
		{code: 200},
		{code: 204},
		{code: 202},
		{code: 301, header: [2]string{"Location", "/elsewhere"}, wantErr: true, retryable: true},
		{code: 307, header: [2]string{"Location", "/elsewhere"}, wantErr: true, retryable: true},
		{code: 400, wantErr: true, retryable: true},
		{code: 404, wantErr: true, retryable: true},
		{code: 410, wantErr: true, retryable: true},
		{code: 429, header: [2]string{"Retry-After", "3"}, wantErr: true, retryable: true, retryAfter: 3 * time.Second},
		{code: 429, wantErr: true, retryable: true},
		{code: 500, header: [2]string{"Retry-After", "3"}, wantErr: true, retryable: true}, // only 429/503 carry it
		{code: 500, wantErr: true, retryable: true},
		{code: 503, header: [2]string{"Retry-After", "120"}, wantErr: true, retryable: true, retryAfter: 2 * time.Minute},
	} {
		t.Run(fmt.Sprintf("%d%s", tc.code, tc.header[0]), func(t *testing.T) {
			rcv := startReceiver(t, func(ctx *fasthttp.RequestCtx) {
				if tc.header[0] != "" {
					ctx.Response.Header.Set(tc.header[0], tc.header[1])
				}
				ctx.SetStatusCode(tc.code)
			})
			s := newSender(t, Config{AllowPrivate: true})
			res := s.Send(soon(), testID, testRequest(rcv.url+"/hook"), session.StatusInvalid)
			if res.StatusCode != tc.code {
				t.Errorf("StatusCode = %d, want %d", res.StatusCode, tc.code)
			}
			if (res.Err != nil) != tc.wantErr {
				t.Errorf("Err = %v, want error %v", res.Err, tc.wantErr)
			}
			if tc.wantErr && res.Err.Error() != fmt.Sprintf("callback: status %d", tc.code) {
				t.Errorf("Err = %q", res.Err)
			}
			if res.Retryable != tc.retryable {
				t.Errorf("Retryable = %v, want %v", res.Retryable, tc.retryable)
			}
			if res.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", res.RetryAfter, tc.retryAfter)
			}
			for _, r := range rcv.requests() {
				if r.path != "/hook" {
					t.Errorf("a redirect was followed to %s", r.path)
				}
			}
		})
	}
}

const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT" // net/http.TimeFormat

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"3", 3 * time.Second},
		{" 7 ", 7 * time.Second},
		{"-1", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999", 0}, // overflows uint64: not a number
		{"999999999", maxRetryAfter},
		{now.Add(90 * time.Second).Format(httpDate), 90 * time.Second},
		{now.Add(-time.Hour).Format(httpDate), 0},
	} {
		if got := parseRetryAfter([]byte(tc.in), now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestSendLargeResponseBodyIsDelivered(t *testing.T) {
	rcv := startReceiver(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBody(bytes.Repeat([]byte("x"), 4*maxResponseBody))
	})
	s := newSender(t, Config{AllowPrivate: true})
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed))
	// The connection was dropped, not the ability to send again.
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed))
}

func TestSendTimeout(t *testing.T) {
	release := make(chan struct{})
	rcv := startReceiver(t, func(ctx *fasthttp.RequestCtx) {
		select {
		case <-release:
		case <-time.After(2 * time.Second):
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the receiver's Shutdown
	s := newSender(t, Config{AllowPrivate: true})

	start := time.Now()
	res := s.Send(time.Now().Add(150*time.Millisecond), testID, testRequest(rcv.url), session.StatusAllowed)
	took := time.Since(start)
	if res.Err == nil || !res.Retryable || res.StatusCode != 0 {
		t.Fatalf("want a retryable error, got %+v", res)
	}
	if !errors.Is(res.Err, fasthttp.ErrTimeout) {
		t.Errorf("Err = %v, want fasthttp.ErrTimeout", res.Err)
	}
	if took > 600*time.Millisecond {
		t.Errorf("Send took %v past a 150ms deadline", took)
	}
}

func TestSendConfigTimeout(t *testing.T) {
	release := make(chan struct{})
	rcv := startReceiver(t, func(ctx *fasthttp.RequestCtx) { <-release })
	t.Cleanup(func() { close(release) })
	s := newSender(t, Config{AllowPrivate: true, Timeout: 100 * time.Millisecond})

	start := time.Now()
	res := s.Send(time.Time{}, testID, testRequest(rcv.url), session.StatusAllowed)
	if res.Err == nil || !res.Retryable {
		t.Fatalf("want a retryable error, got %+v", res)
	}
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Errorf("Send took %v with a 100ms Config.Timeout", took)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := newSender(t, Config{AllowPrivate: true})
	res := s.Send(soon(), testID, testRequest("http://"+addr+"/"), session.StatusAllowed)
	if res.Err == nil || !res.Retryable || res.StatusCode != 0 {
		t.Fatalf("want a retryable error, got %+v", res)
	}
}

func TestSendBadURL(t *testing.T) {
	s := newSender(t, Config{AllowPrivate: true})
	for _, u := range []string{"", "ftp://example.com/", "http://", "/relative", "http://%zz/", "example.com/cb"} {
		res := s.Send(soon(), testID, testRequest(u), session.StatusAllowed)
		if !errors.Is(res.Err, errBadURL) || res.Retryable {
			t.Errorf("%q: want a non-retryable bad url, got %+v", u, res)
		}
	}
}

func TestSendReusesConnections(t *testing.T) {
	rcv := startReceiver(t, nil)
	s := newSender(t, Config{AllowPrivate: true})
	for range 5 {
		mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed))
	}
	if n := rcv.accepts.Load(); n != 1 {
		t.Errorf("5 sequential sends opened %d connections, want 1", n)
	}
}

// A kept-alive connection the receiver closed is not a failed attempt.
func TestSendAfterReceiverClosedIdleConnection(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := serveReceiver(t, ln, nil, nil, func(srv *fasthttp.Server) { srv.IdleTimeout = 20 * time.Millisecond })
	s := newSender(t, Config{AllowPrivate: true})
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed))
	testwait.Eventually(t, 2*time.Second, 5*time.Millisecond, func() error {
		if n := rcv.srv.GetOpenConnectionsCount(); n != 0 {
			return fmt.Errorf("receiver has %d open connections", n)
		}
		return nil
	})
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed))
}

func TestSendForbiddenDestination(t *testing.T) {
	rcv := startReceiver(t, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rcv.url, "http://"))

	var rcv6 *receiver
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		rcv6 = serveReceiver(t, ln, nil, nil, nil)
	}
	url6 := "http://[::1]:" + port + "/"
	if rcv6 != nil {
		url6 = rcv6.url + "/"
	}

	var connects atomic.Int64
	s := newSender(t, Config{
		AllowPrivate: false,
		connecting:   func(netip.AddrPort) { connects.Add(1) },
	})
	for _, u := range []string{
		rcv.url + "/",
		url6,
		"http://localhost:" + port + "/",
		"http://10.0.0.1/",
		"http://169.254.169.254/latest/meta-data/",
		"https://[::ffff:127.0.0.1]:" + port + "/",
		"http://0.0.0.0:" + port + "/",
		"http://[fe80::1%25lo]:" + port + "/",
	} {
		t.Run(u, func(t *testing.T) {
			res := s.Send(soon(), testID, testRequest(u), session.StatusAllowed)
			if !errors.Is(res.Err, ErrForbiddenDestination) || res.Retryable {
				t.Fatalf("want a non-retryable ErrForbiddenDestination, got %+v", res)
			}
		})
	}
	if n := connects.Load(); n != 0 {
		t.Errorf("%d connects were attempted", n)
	}
	if n, m := rcv.accepts.Load(), len(rcv.requests()); n != 0 || m != 0 {
		t.Errorf("receiver on 127.0.0.1 got %d connections, %d requests; want none", n, m)
	}
	if rcv6 != nil {
		if n, m := rcv6.accepts.Load(), len(rcv6.requests()); n != 0 || m != 0 {
			t.Errorf("receiver on ::1 got %d connections, %d requests; want none", n, m)
		}
	}
}

// The guard runs per address: with AllowPrivate the same receiver is reached.
func TestSendAllowPrivateReachesLocalhost(t *testing.T) {
	rcv := startReceiver(t, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rcv.url, "http://"))
	var connects atomic.Int64
	s := newSender(t, Config{AllowPrivate: true, connecting: func(netip.AddrPort) { connects.Add(1) }})
	mustDeliver(t, s.Send(soon(), testID, testRequest("http://localhost:"+port+"/"), session.StatusAllowed))
	if connects.Load() == 0 {
		t.Error("the connecting hook was never called")
	}
}

func TestSendLogsMaskedToken(t *testing.T) {
	rcv := startReceiver(t, nil)
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newSender(t, Config{AllowPrivate: true, Logger: log})
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed))
	s2 := newSender(t, Config{Logger: log})
	s2.Send(soon(), testID, testRequest(rcv.url), session.StatusAllowed)

	out := buf.String()
	if strings.Contains(out, testToken) {
		t.Fatalf("log shows the full driver token:\n%s", out)
	}
	if !strings.Contains(out, session.MaskToken(testToken)) || !strings.Contains(out, `"level":"WARN"`) {
		t.Errorf("want a Debug and a Warn record with the masked token:\n%s", out)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	err := Config{Secrets: []string{specSecret, "nope"}, Timeout: -1, MaxConnsPerHost: -1}.Validate()
	if err == nil || !errors.Is(err, ErrSecret) {
		t.Fatalf("Validate = %v, want ErrSecret among the errors", err)
	}
	for _, want := range []string{"secret 2", "timeout", "max conns"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "MfKQ9r8") {
		t.Errorf("Validate error shows a secret: %q", err)
	}
	if _, err := New(Config{Secrets: []string{"nope"}}); err == nil {
		t.Error("New accepted a bad secret")
	}
}

// tlsPair is a self-signed certificate for 127.0.0.1, in PEM.
type tlsPair struct {
	cert, key []byte
	pool      *x509.CertPool
}

func selfSigned(t *testing.T) *tlsPair {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "chargeauth test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tlsPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		pool: pool,
	}
}

func TestSendHTTPS(t *testing.T) {
	pair := selfSigned(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := serveReceiver(t, ln, nil, pair, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rcv.url, "https://"))

	s := newSender(t, Config{AllowPrivate: true, tlsConfig: &tls.Config{RootCAs: pair.pool}})
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url+"/hook"), session.StatusAllowed))
	mustDeliver(t, s.Send(soon(), testID, testRequest("https://localhost:"+port+"/hook"), session.StatusAllowed))

	// System roots (the default) do not trust the test certificate.
	plain := newSender(t, Config{AllowPrivate: true})
	res := plain.Send(soon(), testID, testRequest(rcv.url+"/hook"), session.StatusAllowed)
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(res.Err, &unknownCA) || !res.Retryable {
		t.Errorf("want a retryable unknown-authority error, got %+v", res)
	}
}

// A receiver that accepts TCP and never answers the TLS handshake must not
// hold an attempt past its deadline.
func TestSendTLSHandshakeStall(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	s := newSender(t, Config{AllowPrivate: true})
	start := time.Now()
	res := s.Send(time.Now().Add(150*time.Millisecond), testID, testRequest("https://"+ln.Addr().String()+"/"), session.StatusAllowed)
	if res.Err == nil || !res.Retryable {
		t.Fatalf("want a retryable error, got %+v", res)
	}
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Errorf("Send took %v past a 150ms deadline", took)
	}
}

// --callback-allow-cidr opens one range without opening the rest.
func TestSendAllowCIDR(t *testing.T) {
	rcv := startReceiver(t, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rcv.url, "http://"))
	s := newSender(t, Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url+"/"), session.StatusAllowed))
	for _, u := range []string{"http://127.0.0.2:" + port + "/", "http://10.0.0.1/", "http://[::1]:" + port + "/"} {
		if res := s.Send(soon(), testID, testRequest(u), session.StatusAllowed); !errors.Is(res.Err, ErrForbiddenDestination) {
			t.Errorf("%s: %+v, want still forbidden", u, res)
		}
	}
	if n := len(rcv.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
}

// --callback-ca-file: an HTTPS receiver whose certificate a CA file vouches
// for is trusted; a file with no certificate is an error.
func TestSendHTTPSWithCAFile(t *testing.T) {
	pair := selfSigned(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := serveReceiver(t, ln, nil, pair, nil)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pair.cert, 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSender(t, Config{AllowPrivate: true, CAFile: ca})
	mustDeliver(t, s.Send(soon(), testID, testRequest(rcv.url+"/hook"), session.StatusAllowed))

	bad := filepath.Join(dir, "bad.pem")
	_ = os.WriteFile(bad, []byte("not a certificate"), 0o644)
	if _, err := New(Config{CAFile: bad}); err == nil {
		t.Error("a CA file without a certificate should be refused")
	}
}
