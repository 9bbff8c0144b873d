// Package api is chargeauth's HTTP face: the public fasthttp front
// (POST and GET /charge_point/session/) and the admin listener (health,
// readiness, metrics, sessions, redelivery). It serves HTTP and nothing
// else: Server is built (New) from what it needs, the open store and the
// running engine (api.Config), by package node, which opens the store,
// starts the engine and serves the servers Server gives it.
//
// The front copies what it needs out of the fasthttp request once (through
// session.ParseRequest) and hands only domain values to the actors; nothing
// below this package sees a *fasthttp.RequestCtx. Every failed answer (400,
// 404, 405, 413, 415, 503) is written by writeFailed from the table in
// errors.go.
package api
