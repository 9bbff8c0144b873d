package session

import "time"

// Status is the decision sent in the callback.
type Status string

// The four decisions. StatusUnknown means "no answer in time" (unlike OCPP
// 2.0.1, where Unknown means an unknown identifier: that is StatusInvalid here).
const (
	StatusAllowed    Status = "allowed"
	StatusNotAllowed Status = "not_allowed"
	StatusInvalid    Status = "invalid"
	StatusUnknown    Status = "unknown"
)

// Valid reports whether s is one of the four decisions.
func (s Status) Valid() bool {
	switch s {
	case StatusAllowed, StatusNotAllowed, StatusInvalid, StatusUnknown:
		return true
	}
	return false
}

// State is where a request is in its life.
type State string

// The states, in order. A request only moves forward:
// pending -> decided -> delivered | failed (and failed -> decided when an
// operator asks for redelivery).
const (
	StatePending   State = "pending"
	StateDecided   State = "decided"
	StateDelivered State = "delivered"
	StateFailed    State = "failed"
)

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateDecided, StateDelivered, StateFailed:
		return true
	}
	return false
}

// DecidedBy says what made the decision.
type DecidedBy string

const (
	// ByAuthz: the authorization service answered before the deadline.
	ByAuthz DecidedBy = "authz"
	// ByTimeout: the deadline passed first; the status is unknown.
	ByTimeout DecidedBy = "timeout"
)

// Request is a validated "start a charging session" request, with its fields
// exactly as the client sent them (they are echoed in the callback).
type Request struct {
	StationID   string `json:"station_id"`
	DriverToken string `json:"driver_token"`
	CallbackURL string `json:"callback_url"`
}

// Record is everything chargeauth keeps about one request.
type Record struct {
	ID string `json:"request_id"`
	Request
	AcceptedAt time.Time `json:"accepted_at"`
	DecideBy   time.Time `json:"decide_by"`

	State     State     `json:"state"`
	Status    Status    `json:"status,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	DecidedBy DecidedBy `json:"decided_by,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`

	CallbackAttempts int          `json:"callback_attempts"`
	Attempts         []AttemptLog `json:"attempts,omitempty"` // the last MaxAttemptLog attempts, oldest first
	NextAttemptAt    time.Time    `json:"next_attempt_at,omitzero"`
	LastError        string       `json:"last_error,omitempty"`
	DeliveredAt      time.Time    `json:"delivered_at,omitzero"`
	FailedAt         time.Time    `json:"failed_at,omitzero"`
	RedeliveredAt    time.Time    `json:"redelivered_at,omitzero"` // the last operator redelivery

	// RoundStartAttempts is CallbackAttempts when the current round of
	// attempts began: 0, or its value at the last redelivery. The retry
	// schedule counts the round's attempts from it; CallbackAttempts counts
	// them all.
	RoundStartAttempts int `json:"-"`
	// Redeliveries are the last MaxRedeliveryLog operator redeliveries,
	// oldest first: the failures that FailedAt, cleared by each, no longer
	// holds. Transitions shows them.
	Redeliveries []Redelivery `json:"-"`
}

// Redelivery is one operator redelivery of a failed request.
type Redelivery struct {
	FailedAt time.Time // when the round before it failed
	At       time.Time // when the operator asked
}

// MaxRedeliveryLog is how many redeliveries a record keeps.
const MaxRedeliveryLog = 10

// Redelivered is the transition of a redelivery (failed -> decided) as
// Transitions names it; it is never a record's State.
const Redelivered State = "redelivered"

// Transition is one step of a request's life: the state it entered (or
// Redelivered), and when.
type Transition struct {
	State State     `json:"state"`
	At    time.Time `json:"at"`
}

// Transitions is the record's history, oldest first: pending, decided,
// each kept redelivery as failed then redelivered, then delivered or
// failed. A step not taken yet is left out.
func (r *Record) Transitions() []Transition {
	tr := make([]Transition, 0, 4+2*len(r.Redeliveries))
	tr = append(tr, Transition{StatePending, r.AcceptedAt})
	if !r.DecidedAt.IsZero() {
		tr = append(tr, Transition{StateDecided, r.DecidedAt})
	}
	for _, rd := range r.Redeliveries {
		if !rd.FailedAt.IsZero() {
			tr = append(tr, Transition{StateFailed, rd.FailedAt})
		}
		tr = append(tr, Transition{Redelivered, rd.At})
	}
	if len(r.Redeliveries) == 0 && !r.RedeliveredAt.IsZero() {
		// Written by a version that kept only the last redelivery.
		tr = append(tr, Transition{Redelivered, r.RedeliveredAt})
	}
	if !r.DeliveredAt.IsZero() {
		tr = append(tr, Transition{StateDelivered, r.DeliveredAt})
	}
	if !r.FailedAt.IsZero() {
		tr = append(tr, Transition{StateFailed, r.FailedAt})
	}
	return tr
}

// MaxAttemptLog is how many callback attempts a record keeps in Attempts.
const MaxAttemptLog = 10

// AttemptLog is one callback attempt as kept with the record.
type AttemptLog struct {
	At         time.Time `json:"at"`                    // when it ended
	StatusCode int       `json:"status_code,omitempty"` // the receiver's answer; 0 if none
	Error      string    `json:"error,omitempty"`       // "" when delivered
	DurationMS float64   `json:"duration_ms"`
	// Response is the start of the receiver's response body, at most
	// MaxResponseLog bytes, as received (it may hold any byte: escape it
	// to show it), with the request's driver token masked.
	Response string `json:"response,omitempty"`
}

// MaxResponseLog is how much of a receiver's response body an attempt keeps.
const MaxResponseLog = 256

// MaskToken returns a driver token safe to log or show: its first four
// characters and its length, never the whole token.
func MaskToken(token string) string {
	const keep = 4
	if len(token) <= keep {
		return "****"
	}
	return token[:keep] + "****"
}
