package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// sink prints every callback it receives, one line each, and answers 204.
func sink(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "address to receive callbacks on")
	status := fs.Int("status", 204, "status code to answer with (e.g. 500 to see retries)")
	if err := parseFlags(fs, args, stderr, "chargeauth sink [flags]"); err != nil {
		return err
	}
	if *status < 200 || *status > 599 {
		return usageError("--status %d: must be an HTTP status code", *status)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return usageError("--listen: %v", err)
	}
	var mu sync.Mutex
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			mu.Lock()
			fmt.Fprintf(stdout, "%s %s %s webhook-id=%s webhook-timestamp=%s webhook-signature=%q %s\n",
				time.Now().UTC().Format(time.RFC3339Nano), ctx.Method(), ctx.RequestURI(),
				ctx.Request.Header.Peek("webhook-id"), ctx.Request.Header.Peek("webhook-timestamp"),
				ctx.Request.Header.Peek("webhook-signature"), ctx.PostBody())
			mu.Unlock()
			ctx.SetStatusCode(*status)
		},
		Name: "chargeauth-sink",
	}
	fmt.Fprintf(stderr, "sink listening on %s, answering %d\n", ln.Addr(), *status)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		return srv.Shutdown()
	case err := <-errc:
		return err
	}
}
