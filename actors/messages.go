package actors

import (
	"time"

	"github.com/chargeauth/chargeauth/session"
)

// Every message is sent as a pointer and never changed after Send. Commands
// are imperative, events past tense.

// Accepted tells the supervisor that a request is durably stored as pending.
type Accepted struct {
	Record session.Record
}

// Authorize asks the authz pool for a decision. The pool answers the sender
// with *AuthzAnswered.
type Authorize struct {
	ID          string
	StationID   string
	DriverToken string
	Deadline    time.Time
}

// AuthzAnswered is the outcome of one call (or of no call, when the deadline
// had passed). Err != nil means no answer: the request actor may retry.
type AuthzAnswered struct {
	Status session.Status
	Reason string
	Err    error
}

// NotInfluenceReceiveTimeout keeps the request actor's deadline fixed.
func (*AuthzAnswered) NotInfluenceReceiveTimeout() {}

// IgnoreDeadLetterLogging: an answer that arrives after its request actor
// decided by timeout and stopped is expected (see expectedDeadLetter).
func (*AuthzAnswered) IgnoreDeadLetterLogging() {}

// retryAuthorize is the request actor's own timer after a failed call. It
// is never a dead letter: the actor stops its timers when it stops.
type retryAuthorize struct{}

func (*retryAuthorize) NotInfluenceReceiveTimeout() {}

// deadlinePassed is the request actor's deadline timer (never a dead
// letter either).
type deadlinePassed struct{}

func (*deadlinePassed) NotInfluenceReceiveTimeout() {}

// workerIdle tells the pool that a worker finished its call.
type workerIdle struct{}

// IgnoreDeadLetterLogging: a call that ends after Stop finds the pool gone.
func (*workerIdle) IgnoreDeadLetterLogging() {}

// DeliverCallback asks the callback sender to deliver a durable decision.
type DeliverCallback struct {
	Record session.Record
}

// rescanCallbacks tells the callback sender to read the store's due index
// again (on start, and after the store recovers): it takes what is due,
// and arms its wake for the first that is not.
type rescanCallbacks struct{}

// wakeCallbacks is the callback sender's wake timer: the earliest callback
// waiting in the store is due, so it reads the due index again. gen tells
// a wake already in the mailbox when the timer was re-armed from the one
// armed now. The sender stops the timer when it stops: never a dead letter.
type wakeCallbacks struct{ gen uint64 }

// CallbackAttempted is a delivery task's report once its attempt is stored.
type CallbackAttempted struct {
	Record session.Record // as stored after the attempt
	Err    error          // the store error, if the attempt could not be recorded
}

// resume asks the supervisor to admit stored pending requests (on start,
// and again after the store recovers from a failed write). It answers
// *resumed when sent with a sender.
type resume struct{}

// resumed answers resume.
type resumed struct{ err error }
