package acl

import "sync"

// SampleJSON is the built-in ACL used when no file is given: the three
// entries of DESIGN.md plus an expired one, as file content.
var SampleJSON = []byte(`{"entries": [
  {"driver_token": "validDriverToken1234567", "status": "active"},
  {"driver_token": "blockedDriverToken12345", "status": "blocked"},
  {"driver_token": "stationBoundToken123456", "status": "active",
   "stations": ["123e4567-e89b-12d3-a456-426614174000"],
   "expires_at": "2027-01-01T00:00:00Z"},
  {"driver_token": "expiredDriverToken12345", "status": "active",
   "expires_at": "2020-01-01T00:00:00Z"}
]}
`)

var sample = sync.OnceValue(func() *ACL {
	a, err := Parse(SampleJSON)
	if err != nil {
		panic(err) // SampleJSON is a constant; TestSample covers it.
	}
	return a
})

// Sample returns the ACL parsed from SampleJSON. Every call returns the
// same (immutable) *ACL.
func Sample() *ACL { return sample() }
