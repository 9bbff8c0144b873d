package node

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkAccept measures the front's accept path: the handler on a parsed
// request, the id, the record's synced write to Pebble on a real disk, the
// message to the supervisor and the 202. Goroutines run it in parallel, as
// fasthttp's workers do, so that their commits share fsyncs.
//
// Nothing else runs meanwhile, so that allocs/op counts the front alone:
// one request actor is live, and it waits on an authorization service that
// answers only when the benchmark ends; the others wait in the backlog.
//
//	go test -run xxx -bench Accept -benchmem ./node/
func BenchmarkAccept(b *testing.B) {
	release := make(chan struct{})
	authzURL := serveBench(b, func(ctx *fasthttp.RequestCtx) {
		<-release
		ctx.SetBodyString(`{"status":"allowed"}`)
	})
	b.Cleanup(func() { close(release) })
	cfg := Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		DataDir: filepath.Join(b.TempDir(), "data"), AuthzURL: authzURL,
		DecisionTimeout: time.Hour, MaxInflight: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}.WithDefaults()
	cfg.ShutdownGrace = 0
	svc, err := Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close() })
	handle := svc.public.Handler
	body := []byte(`{"station_id":"123e4567-e89b-12d3-a456-426614174000",` +
		`"driver_token":"validDriverToken1234567","callback_url":"https://example.com/callback"}`)

	b.ReportAllocs()
	b.SetParallelism(16) // 32 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod(fasthttp.MethodPost)
			ctx.Request.SetRequestURI("/charge_point/session/")
			ctx.Request.Header.SetContentType("application/json")
			ctx.Request.SetBody(body)
			handle(&ctx)
			if code := ctx.Response.StatusCode(); code != fasthttp.StatusAccepted {
				b.Errorf("status %d: %s", code, ctx.Response.Body())
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepts/s")
}

// serveBench starts a fasthttp server on loopback for b and returns its URL.
func serveBench(b *testing.B, h fasthttp.RequestHandler) string {
	b.Helper()
	srv := &fasthttp.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends at Shutdown
	b.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}
