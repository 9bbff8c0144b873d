package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/http/webhook"
)

// sinkEnv: sink reads CHARGEAUTH_SINK_<FLAG> (CHARGEAUTH_SINK_LISTEN, ...).
var sinkEnv = prefixEnv(envPrefix + "_SINK")

// sink prints every callback it receives, one line each, and answers
// --status. With --secret it checks each callback's Standard Webhooks
// signature and says on the line whether it is valid.
func sink(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "address to receive callbacks on")
	status := fs.Int("status", 204, "status code to answer with (e.g. 500 to see retries)")
	secret := fs.String("secret", "", "whsec_<base64> secret(s), space-separated, to verify the webhook-signature of each callback (empty: not checked)")
	if err := parseFlagsEnv(fs, args, "chargeauth sink [flags]", sinkEnv); err != nil {
		return err
	}
	if *status < 200 || *status > 599 {
		return usageError("--status %d: must be an HTTP status code", *status)
	}
	var verifiers []*standardwebhooks.Webhook
	for _, s := range strings.Fields(*secret) {
		key, err := webhook.ParseSecret(s)
		if err != nil {
			return usageError("--secret: %v", err)
		}
		wh, _ := standardwebhooks.NewWebhookRaw(key) // never fails
		verifiers = append(verifiers, wh)
	}
	// The handler is in place before the port opens: a SIGTERM as soon as
	// it accepts stops the sink, exit 0.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return usageError("--listen: %v", err)
	}
	var mu sync.Mutex
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			line := fmt.Sprintf("%s %s %s webhook-id=%s webhook-timestamp=%s webhook-signature=%q",
				time.Now().UTC().Format(time.RFC3339Nano), ctx.Method(), ctx.RequestURI(),
				ctx.Request.Header.Peek("webhook-id"), ctx.Request.Header.Peek("webhook-timestamp"),
				ctx.Request.Header.Peek("webhook-signature"))
			if verifiers != nil {
				line += " signature=" + verifySignature(verifiers, &ctx.Request)
			}
			mu.Lock()
			fmt.Fprintf(stdout, "%s %s\n", line, ctx.PostBody())
			mu.Unlock()
			ctx.SetStatusCode(*status)
		},
		Name:                  "chargeauth-sink",
		SecureErrorLogMessage: true, // a malformed request is not echoed to the log
	}
	how := "signatures not checked"
	if verifiers != nil {
		how = fmt.Sprintf("checking signatures with %d secret(s)", len(verifiers))
	}
	fmt.Fprintf(stderr, "sink listening on %s, answering %d, %s\n", ln.Addr(), *status, how)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		return srv.Shutdown()
	case err := <-errc:
		return err
	}
}

// verifySignature says whether req carries a valid Standard Webhooks
// signature under one of the secrets: "valid", or "invalid(<why>)". The
// timestamp must be within the library's 5 minutes of now, as a receiver
// should check it.
func verifySignature(verifiers []*standardwebhooks.Webhook, req *fasthttp.Request) string {
	h := http.Header{}
	for _, k := range []string{standardwebhooks.HeaderWebhookID, standardwebhooks.HeaderWebhookTimestamp, standardwebhooks.HeaderWebhookSignature} {
		if v := req.Header.Peek(k); len(v) > 0 {
			h.Set(k, string(v))
		}
	}
	var err error
	for _, wh := range verifiers {
		if err = wh.Verify(req.Body(), h); err == nil {
			return "valid"
		}
	}
	why := "no signature matches the secret"
	switch {
	case errors.Is(err, standardwebhooks.ErrRequiredHeaders):
		why = "missing webhook-id, webhook-timestamp or webhook-signature"
	case errors.Is(err, standardwebhooks.ErrInvalidHeaders):
		why = "webhook-timestamp is not unix seconds"
	case errors.Is(err, standardwebhooks.ErrMessageTooOld):
		why = "webhook-timestamp more than 5m in the past"
	case errors.Is(err, standardwebhooks.ErrMessageTooNew):
		why = "webhook-timestamp more than 5m in the future"
	}
	return "invalid(" + why + ")"
}
