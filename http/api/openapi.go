package api

import (
	_ "embed" // the OpenAPI document

	"github.com/valyala/fasthttp"
)

// OpenAPI is the OpenAPI 3.1 document of the public API, the callback (a
// webhook) and the admin API. The admin listener serves it at
// /openapi.yaml; openapi_test.go checks the running server against it.
//
//go:embed openapi.yaml
var OpenAPI []byte

// serveOpenAPI answers /openapi.yaml with the document (any method, as
// /healthz and /metrics do).
func serveOpenAPI(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/yaml")
	ctx.SetBody(OpenAPI)
}
