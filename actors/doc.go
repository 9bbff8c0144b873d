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
// While the front is hot (a burst), the yield controller (yield.go) paces
// the supervisor's admissions, so that the front keeps the CPU and the
// burst waits on disk; it finds a hot front by probing: the front takes
// more while the pipeline is paced. It probes only a front with many
// accepts waiting, and sleeps (no ticks) while the front is idle.
//
// The pool bounds the calls to the authorization service to
// AuthzConcurrency: each worker holds one call at a time, and a free worker
// takes the oldest waiting call, skipping those whose deadline has passed.
//
// # Hand-offs per request
//
// A request that is allowed at the first call and delivered at the first
// attempt crosses goroutines twelve times after its accept: eight mailbox
// runs (the supervisor's *Accepted, the request actor's Started, the
// pool's *Authorize, the request actor's *AuthzAnswered, the pool's
// *workerIdle, the sender's *DeliverCallback, the supervisor's Terminated,
// the sender's *CallbackAttempted; under load several messages share one
// run), two channel hand-offs to kept goroutines (an authz worker, an
// attempt worker), and up to two to the store's group commit (the accept's
// and the decision's fsyncs, when another writer leads the group).
// protoactor runs each mailbox run on a goroutine of its own; the engine's
// dispatcher (dispatch.go) hands them to kept workers instead, so that at
// a steady rate a request creates no goroutine (8 with protoactor's
// default dispatcher: TestGoroutinesPerRequest), and the workers' stacks,
// already grown, are not grown and copied again for every request.
//
// The package knows the store (persistence) and the domain (session), but
// nothing of fasthttp: the authorization call and the callback POST come in
// as functions (AuthorizeFunc, DeliverFunc) wired by the caller.
//
// # Request ids
//
// A request id is a UUIDv7 (RFC 9562) that names the node owning it
// (NewID, NodeOf):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                           unix_ts_ms                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          unix_ts_ms           |  ver  |  rand_a (12 bit seq)  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|var|          node (14 bits)   |          rand_b (16 bits)     |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       rand_b (32 bits)                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// In the text form the node is the fourth group minus 0x8000: node 0
// writes ...-8000-..., node 2 ...-8002-..., node 16383 ...-bfff-.... RFC
// 9562 leaves rand_b to the implementation; the id stays a valid UUIDv7,
// time-ordered to the sub-millisecond by rand_a (a per-process sequence,
// google/uuid), so ids of one process never repeat and ids of two nodes
// never collide. The node number comes from --node-id (NodeNumber).
package actors
