// Package acl owns the authorization service's Access Control List: its
// entries, the JSON file they are loaded from, and the rules that turn
// (station, driver token, time) into a decision.
//
// The file format (see SampleJSON):
//
//	{"entries": [
//	  {"driver_token": "validDriverToken1234567", "status": "active"},
//	  {"driver_token": "blockedDriverToken12345", "status": "blocked"},
//	  {"driver_token": "stationBoundToken123456", "status": "active",
//	   "stations": ["123e4567-e89b-12d3-a456-426614174000"],
//	   "expires_at": "2027-01-01T00:00:00Z"}
//	]}
//
// The decision rules, checked in this order (modelled on OCPP's
// authorization statuses):
//
//	token not in the ACL                 -> invalid      "unknown_token"
//	status "blocked"                     -> not_allowed  "blocked"
//	now >= expires_at                    -> not_allowed  "expired"
//	stations given, station not in them  -> not_allowed  "not_at_this_station"
//	otherwise                            -> allowed      ""
//
// A missing stations list means every station; station ids compare
// case-insensitively. An ACL never decides "unknown": that status means the
// authorization service did not answer in time.
//
// An *ACL is immutable once built, so it may be shared by any number of
// goroutines and swapped whole (atomic.Pointer) to reload it. Parsing is
// strict: a file that would silently mean something else (an unknown status,
// a misspelt key, a duplicate token) is rejected.
//
// The package does no I/O except Load reading one file, and knows nothing of
// HTTP, actors or storage.
package acl
