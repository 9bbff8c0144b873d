package acl

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/chargeauth/chargeauth/session"
)

// Entry statuses as they appear in the file.
const (
	EntryActive  = "active"
	EntryBlocked = "blocked"
)

// Reasons Decide gives with a decision. An allowed decision has no reason.
const (
	ReasonUnknownToken     = "unknown_token"
	ReasonBlocked          = "blocked"
	ReasonExpired          = "expired"
	ReasonNotAtThisStation = "not_at_this_station"
)

// Entry is one line of the ACL file.
type Entry struct {
	DriverToken string `json:"driver_token"`
	// Status is "active" or "blocked".
	Status string `json:"status"`
	// Stations, when present, are the only stations (UUIDs, either case) the
	// token may start a session at. Missing means every station; an empty
	// list is rejected, as it would mean none.
	Stations []string `json:"stations,omitempty"`
	// ExpiresAt, when present, is the first instant the token is refused.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// file is the whole ACL file.
type file struct {
	Entries []Entry `json:"entries"`
}

// compiled is an Entry made ready for Decide.
type compiled struct {
	blocked   bool
	hasExpiry bool
	expiresAt time.Time
	// stations holds lowercased station ids; nil means every station.
	stations map[string]struct{}
}

// ACL is a parsed Access Control List. It is immutable after construction
// and safe for concurrent use.
type ACL struct {
	entries map[string]compiled // driver token -> entry
	version string
}

// stationIDLen is the length of a UUID in its 8-4-4-4-12 form.
const stationIDLen = 36

// Parse parses an ACL file. It rejects unknown keys, an unknown status, an
// empty or malformed driver token, a station that is not a UUID in
// 8-4-4-4-12 form, and a duplicate token; the error names the entry index.
func Parse(data []byte) (*ACL, error) {
	a, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	return a, nil
}

// Load reads and parses the ACL file at path.
func Load(path string) (*ACL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	a, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("acl: %s: %w", path, err)
	}
	return a, nil
}

func parse(data []byte) (*ACL, error) {
	var f file
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the top-level object")
	}
	if f.Entries == nil {
		return nil, errors.New(`missing "entries" list`)
	}
	a := &ACL{
		entries: make(map[string]compiled, len(f.Entries)),
		version: version(data),
	}
	for i, e := range f.Entries {
		c, err := compile(e)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if _, dup := a.entries[e.DriverToken]; dup {
			j := slices.IndexFunc(f.Entries, func(x Entry) bool { return x.DriverToken == e.DriverToken })
			return nil, fmt.Errorf("entry %d: duplicate driver_token %s (first at entry %d)",
				i, session.MaskToken(e.DriverToken), j)
		}
		a.entries[e.DriverToken] = c
	}
	return a, nil
}

func compile(e Entry) (compiled, error) {
	var c compiled
	if err := checkToken(e.DriverToken); err != nil {
		return c, err
	}
	switch e.Status {
	case EntryActive:
	case EntryBlocked:
		c.blocked = true
	default:
		return c, fmt.Errorf("status %q: want %q or %q", e.Status, EntryActive, EntryBlocked)
	}
	if e.ExpiresAt != nil {
		c.hasExpiry = true
		c.expiresAt = *e.ExpiresAt
	}
	if e.Stations != nil {
		if len(e.Stations) == 0 {
			return c, errors.New("stations is empty (omit it to allow every station)")
		}
		c.stations = make(map[string]struct{}, len(e.Stations))
		for k, s := range e.Stations {
			if len(s) != stationIDLen || uuid.Validate(s) != nil {
				return c, fmt.Errorf("stations[%d] %q: not a UUID (8-4-4-4-12 hex)", k, s)
			}
			c.stations[strings.ToLower(s)] = struct{}{}
		}
	}
	return c, nil
}

// checkToken applies the public API's rule for driver tokens (20 to 80
// characters of A-Z a-z 0-9 - . _ ~): a token outside it could never be
// matched, so an entry holding one is a mistake in the file.
func checkToken(t string) error {
	if t == "" {
		return errors.New("driver_token is empty")
	}
	if len(t) < 20 || len(t) > 80 {
		return fmt.Errorf("driver_token %s: %d characters, want 20 to 80", session.MaskToken(t), len(t))
	}
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
		default:
			return fmt.Errorf("driver_token %s: character %d is not one of A-Z a-z 0-9 - . _ ~",
				session.MaskToken(t), i)
		}
	}
	return nil
}

func version(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// Decide applies the decision rules (see the package comment) to one
// request at time now. It does not allocate.
func (a *ACL) Decide(stationID, driverToken string, now time.Time) (session.Status, string) {
	e, ok := a.entries[driverToken]
	switch {
	case !ok:
		return session.StatusInvalid, ReasonUnknownToken
	case e.blocked:
		return session.StatusNotAllowed, ReasonBlocked
	case e.hasExpiry && !now.Before(e.expiresAt):
		return session.StatusNotAllowed, ReasonExpired
	case e.stations != nil && !e.atStation(stationID):
		return session.StatusNotAllowed, ReasonNotAtThisStation
	}
	return session.StatusAllowed, ""
}

// atStation reports whether stationID, in any case, is in e.stations.
func (e *compiled) atStation(stationID string) bool {
	// Every stored id is a 36-byte UUID, so nothing else can match. Lowering
	// into a stack buffer keeps the lookup free of allocations (the compiler
	// does not copy for m[string(b)]).
	if len(stationID) != stationIDLen {
		return false
	}
	var buf [stationIDLen]byte
	for i := 0; i < stationIDLen; i++ {
		c := stationID[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	_, ok := e.stations[string(buf[:])]
	return ok
}

// Len returns the number of entries.
func (a *ACL) Len() int { return len(a.entries) }

// Version identifies the file the ACL was parsed from: the first 16 hex
// digits of the SHA-256 of its bytes, as given to Parse.
func (a *ACL) Version() string { return a.version }
