package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/http/console"
)

// rejectAmbiguousFraming answers 400 to a request that carried both
// Content-Length and Transfer-Encoding (RFC 9112 6.3: a possible request
// smuggling attempt) before h sees it. fasthttp reads such a request by
// Transfer-Encoding and closes the connection afterwards, but keeps no
// trace of the Content-Length it dropped, so the check reads the raw
// header block. It returns whether it answered.
func rejectAmbiguousFraming(ctx *fasthttp.RequestCtx) bool {
	if !hasBothLengths(ctx.Request.Header.RawHeaders()) {
		return false
	}
	writeFailed(ctx, failFraming, nil)
	ctx.SetConnectionClose()
	return true
}

var (
	headerContentLength    = []byte("content-length")
	headerTransferEncoding = []byte("transfer-encoding")
)

// hasBothLengths reports whether the raw header lines name both
// Content-Length and Transfer-Encoding (in any case).
func hasBothLengths(raw []byte) bool {
	var cl, te bool
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		key := bytes.TrimSpace(line[:colon])
		switch {
		case bytes.EqualFold(key, headerContentLength):
			cl = true
		case bytes.EqualFold(key, headerTransferEncoding):
			te = true
		}
	}
	return cl && te
}

// guardAdmin wraps the admin handler: it rejects ambiguous framing, and
// when token is set, every path but
// /healthz, /readyz and /metrics needs "Authorization: Bearer <token>",
// except the console's (which asks for a login itself) and a GET that
// readOK accepts (a console session cookie).
// The presented token is compared in constant time (as SHA-256 digests, so
// that its length does not show either), and never logged.
func guardAdmin(token string, readOK func(*fasthttp.RequestCtx) bool, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	want := sha256.Sum256([]byte(token))
	return func(ctx *fasthttp.RequestCtx) {
		if rejectAmbiguousFraming(ctx) {
			return
		}
		if token == "" {
			h(ctx)
			return
		}
		switch string(ctx.Path()) {
		case "/healthz", "/readyz", "/metrics":
			h(ctx)
			return
		}
		if console.Owns(string(ctx.Path())) {
			h(ctx)
			return
		}
		if !bearerMatches(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), want) && !readOK(ctx) {
			writeFailed(ctx, failUnauthorized, nil)
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, "Bearer")
			return
		}
		h(ctx)
	}
}

// bearerMatches reports whether auth is "Bearer <t>" (scheme in any case)
// with sha256(t) == want.
func bearerMatches(auth []byte, want [sha256.Size]byte) bool {
	const scheme = "bearer "
	if len(auth) <= len(scheme) || !bytes.EqualFold(auth[:len(scheme)], []byte(scheme)) {
		return false
	}
	got := sha256.Sum256(bytes.TrimSpace(auth[len(scheme):]))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
