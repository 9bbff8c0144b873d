// Package api is chargeauth's HTTP face: the public fasthttp front
// (POST and GET /charge_point/session/), the admin listener (health,
// readiness, metrics, sessions, redelivery) and Service, which wires the
// store, the actor engine, the authorization client and the callback sender
// behind them.
//
// The front copies what it needs out of the fasthttp request once (through
// session.ParseRequest) and hands only domain values to the actors; nothing
// below this package sees a *fasthttp.RequestCtx. Every failed answer (400,
// 404, 405, 413, 415, 503) is written by writeFailed from the table in
// errors.go.
package api
