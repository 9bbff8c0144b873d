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
}

// MaxAttemptLog is how many callback attempts a record keeps in Attempts.
const MaxAttemptLog = 10

// AttemptLog is one callback attempt as kept with the record.
type AttemptLog struct {
	At         time.Time `json:"at"`                    // when it ended
	StatusCode int       `json:"status_code,omitempty"` // the receiver's answer; 0 if none
	Error      string    `json:"error,omitempty"`       // "" when delivered
	DurationMS float64   `json:"duration_ms"`
}

// MaskToken returns a driver token safe to log or show: its first four
// characters and its length, never the whole token.
func MaskToken(token string) string {
	const keep = 4
	if len(token) <= keep {
		return "****"
	}
	return token[:keep] + "****"
}
