// Package actors owns chargeauth's asynchronous pipeline, built on
// protoactor-go:
//
//	Engine.Accept --(*Accepted)--> supervisor --spawns--> request actor (one per request, named by its id)
//	request actor --(*Authorize)--> authz pool --> N worker goroutines --(HTTP)--> authorization service
//	request actor <-(*AuthzAnswered)-- worker         (or its own *deadlinePassed timer)
//	request actor --store.Decide--> --(*DeliverCallback)--> callback sender --(HTTP)--> callback URL
//
// Engine.Accept writes the request to the store from the caller's goroutine,
// and concurrent accepts share one fsync (a group commit); only then does the supervisor
// hear of it. The supervisor keeps at most MaxInflight request actors alive;
// the rest wait in the store and are admitted oldest first as slots free.
//
// The pool bounds the calls to the authorization service to
// AuthzConcurrency: each worker holds one call at a time, and a free worker
// takes the oldest waiting call, skipping those whose deadline has passed.
//
// The package knows the store (persistence) and the domain (session), but
// nothing of fasthttp: the authorization call and the callback POST come in
// as functions (AuthorizeFunc, DeliverFunc) wired by the caller.
package actors
