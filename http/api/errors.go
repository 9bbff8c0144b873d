package api

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// failure is one kind of failed answer.
type failure int

const (
	failInvalid failure = iota
	failNotFound
	failNoEndpoint
	failMethod
	failTooLarge
	failMediaType
	failHeadersTooLarge
	failFraming
	failUnauthorized
	failClosing
	failDiskFull
	failBacklogFull
	failStorageFault
	failNotReady
	failStore
	failOwnerUnreachable
	failIdempotencyMismatch

	numFailures // not a kind: the count, for the table and its test
)

// failures maps each kind to its status code, message, Retry-After
// seconds (0: no header) and the field its one entry in "errors" names
// (what the caller would change: a header, the path, the body; "service"
// when nothing in the request is wrong). It is the only place these are
// decided.
var failures = [numFailures]struct {
	code       int
	message    string
	retryAfter int
	field      string
}{
	failInvalid:             {fasthttp.StatusBadRequest, "", 0, ""}, // the message and the entries list the field errors
	failNotFound:            {fasthttp.StatusNotFound, "request not found", 0, "request_id"},
	failNoEndpoint:          {fasthttp.StatusNotFound, "no such endpoint", 0, "path"},
	failMethod:              {fasthttp.StatusMethodNotAllowed, "method not allowed", 0, "method"},
	failTooLarge:            {fasthttp.StatusRequestEntityTooLarge, "body is larger than 16 KiB", 0, "body"},
	failMediaType:           {fasthttp.StatusUnsupportedMediaType, "content type must be application/json", 0, "Content-Type"},
	failHeadersTooLarge:     {fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers are larger than 8 KiB", 0, "headers"},
	failFraming:             {fasthttp.StatusBadRequest, "Content-Length and Transfer-Encoding must not both be sent", 0, "Transfer-Encoding"},
	failUnauthorized:        {fasthttp.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <admin token>)", 0, "Authorization"},
	failClosing:             {fasthttp.StatusServiceUnavailable, "service is shutting down; nothing was accepted", 1, "service"},
	failDiskFull:            {fasthttp.StatusServiceUnavailable, "storage is full; nothing was accepted", 5, "service"},
	failBacklogFull:         {fasthttp.StatusServiceUnavailable, "too many requests are waiting; nothing was accepted", 1, "service"},
	failStorageFault:        {fasthttp.StatusServiceUnavailable, "storage failed and is recovering; nothing was accepted", 1, "service"},
	failNotReady:            {fasthttp.StatusServiceUnavailable, "service is still starting; nothing was done", 1, "service"},
	failStore:               {fasthttp.StatusServiceUnavailable, "cannot persist the request; nothing was accepted", 1, "service"},
	failOwnerUnreachable:    {fasthttp.StatusServiceUnavailable, "the node that owns this request does not answer; try again", ownerRetryAfter, "service"},
	failIdempotencyMismatch: {fasthttp.StatusUnprocessableEntity, "Idempotency-Key was used by an earlier request with a different body", 0, "Idempotency-Key"},
}

// acceptFailure classifies an error from Engine.Accept.
func acceptFailure(err error) failure {
	switch {
	case errors.Is(err, actors.ErrStopping), errors.Is(err, persistence.ErrClosing):
		return failClosing
	case errors.Is(err, persistence.ErrDiskFull):
		return failDiskFull
	case errors.Is(err, actors.ErrBacklogFull):
		return failBacklogFull
	case errors.Is(err, persistence.ErrUnavailable):
		return failStorageFault
	case errors.Is(err, ErrNotReady):
		return failNotReady
	default:
		return failStore
	}
}

type failedBody struct {
	Status string               `json:"status"`
	Error  string               `json:"error"`
	Errors []session.FieldError `json:"errors"`
}

// writeFailed writes every failed answer in one shape:
// {"status":"failed","error":...,"errors":[{"field":...,"message":...}]},
// with the field errors given (a 400's) or the kind's one entry.
func writeFailed(ctx *fasthttp.RequestCtx, kind failure, fieldErrors []session.FieldError) {
	f := failures[kind]
	msg := f.message
	if kind == failInvalid {
		msg = session.JoinFieldErrors(fieldErrors)
	}
	if len(fieldErrors) == 0 {
		fieldErrors = []session.FieldError{{Field: f.field, Message: msg}}
	}
	body, _ := json.Marshal(failedBody{Status: "failed", Error: msg, Errors: fieldErrors})
	ctx.Response.Reset()
	ctx.SetStatusCode(f.code)
	ctx.SetContentType("application/json")
	if f.retryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(f.retryAfter))
	}
	ctx.SetBody(body)
}
