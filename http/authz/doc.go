// Package authz is the internal authorization service's REST face, and the
// client chargeauth uses to call it.
//
// Server routes:
//
//	POST /authorize  {"station_id":"...","driver_token":"..."}
//	                 -> 200 {"status":"allowed|not_allowed|invalid|unknown","reason":"..."}
//	                    (reason omitted when empty)
//	                 -> 400 {"status":"failed","error":"..."} for a bad body
//	POST /authorize/batch  [{"station_id":"...","driver_token":"..."}, ...]  (1 to 1000 items)
//	                 -> 200 [{"status":"...","reason":"..."}, ...]  one answer per item, in order,
//	                    by the rules of POST /authorize
//	                 -> 400 {"status":"failed","error":"..."} for a bad body or any bad item
//	                    (the error names the item by index, never its values)
//	GET  /acl        -> 200 {"version":"<16 hex>","entries":N}
//	GET  /healthz    -> 200 {"status":"ok"}
//
// A wrong method is a 405 with an Allow header; any other path a 404.
//
// The decision itself belongs to package acl; this package only carries it
// over HTTP. The Client treats anything but a 200 with one of the four
// statuses (another code, another body, a timeout, a refused connection) as
// no answer: its error wraps ErrNoAnswer. An "unknown" status is an answer.
//
// With ClientConfig.Batch the Client coalesces concurrent calls into POST
// /authorize/batch round trips (batch.go); the batch endpoint is optional
// for an external service, which keeps the one-call contract otherwise.
//
// Driver tokens are never logged whole (session.MaskToken). The package knows
// nothing of actors or storage.
package authz
