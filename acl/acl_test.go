package acl

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
)

const (
	station      = "123e4567-e89b-12d3-a456-426614174000"
	otherStation = "00000000-0000-4000-8000-000000000000"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testACL covers every rule, with the station list in mixed case.
var testACL = []byte(`{"entries": [
  {"driver_token": "activeDriverToken123456", "status": "active"},
  {"driver_token": "blockedDriverToken12345", "status": "blocked"},
  {"driver_token": "blockedExpiredToken1234", "status": "blocked", "expires_at": "2020-01-01T00:00:00Z"},
  {"driver_token": "expiredDriverToken12345", "status": "active", "expires_at": "2026-06-01T12:00:00Z"},
  {"driver_token": "expiredBoundToken123456", "status": "active", "expires_at": "2020-01-01T00:00:00Z",
   "stations": ["` + otherStation + `"]},
  {"driver_token": "notYetExpiredToken12345", "status": "active", "expires_at": "2026-06-01T12:00:00.000000001Z"},
  {"driver_token": "stationBoundToken123456", "status": "active",
   "stations": ["123E4567-E89B-12D3-A456-426614174000", "` + otherStation + `"]}
]}`)

func mustParse(t testing.TB, data []byte) *ACL {
	t.Helper()
	a, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return a
}

func TestDecide(t *testing.T) {
	a := mustParse(t, testACL)
	tests := []struct {
		name, station, token string
		want                 session.Status
		reason               string
	}{
		{"allowed", station, "activeDriverToken123456", session.StatusAllowed, ""},
		{"allowed any station", "not-even-a-uuid", "activeDriverToken123456", session.StatusAllowed, ""},
		{"unknown token", station, "nobodyKnowsThisToken12", session.StatusInvalid, ReasonUnknownToken},
		{"empty token", station, "", session.StatusInvalid, ReasonUnknownToken},
		{"token compare is case-sensitive", station, "ACTIVEDRIVERTOKEN123456", session.StatusInvalid, ReasonUnknownToken},
		{"blocked", station, "blockedDriverToken12345", session.StatusNotAllowed, ReasonBlocked},
		{"blocked before expired", station, "blockedExpiredToken1234", session.StatusNotAllowed, ReasonBlocked},
		{"expired at the instant", station, "expiredDriverToken12345", session.StatusNotAllowed, ReasonExpired},
		{"expired before station", station, "expiredBoundToken123456", session.StatusNotAllowed, ReasonExpired},
		{"one ns before expiry", station, "notYetExpiredToken12345", session.StatusAllowed, ""},
		{"station lower vs upper in file", station, "stationBoundToken123456", session.StatusAllowed, ""},
		{"station upper", strings.ToUpper(station), "stationBoundToken123456", session.StatusAllowed, ""},
		{"station mixed", "123e4567-E89B-12d3-A456-426614174000", "stationBoundToken123456", session.StatusAllowed, ""},
		{"second station", otherStation, "stationBoundToken123456", session.StatusAllowed, ""},
		{"other station", "223e4567-e89b-12d3-a456-426614174000", "stationBoundToken123456", session.StatusNotAllowed, ReasonNotAtThisStation},
		{"station too short", station[:35], "stationBoundToken123456", session.StatusNotAllowed, ReasonNotAtThisStation},
		{"station empty", "", "stationBoundToken123456", session.StatusNotAllowed, ReasonNotAtThisStation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := a.Decide(tt.station, tt.token, now)
			if got != tt.want || reason != tt.reason {
				t.Errorf("Decide(%q, %q) = %q, %q; want %q, %q", tt.station, tt.token, got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	entry := func(s string) string {
		return `{"entries":[{"driver_token":"okDriverToken123456789","status":"active"},` + s + `]}`
	}
	tests := []struct {
		name, data, want string
	}{
		{"not json", `{`, "unexpected EOF"},
		{"not an object", `[]`, "cannot unmarshal"},
		{"no entries", `{}`, `missing "entries"`},
		{"null entries", `{"entries":null}`, `missing "entries"`},
		{"trailing data", `{"entries":[]} {}`, "data after"},
		{"unknown top key", `{"entries":[],"entrys":[]}`, `unknown field "entrys"`},
		{"unknown entry key", entry(`{"driver_token":"aDriverToken123456789","status":"active","expires":"2020-01-01T00:00:00Z"}`), `unknown field "expires"`},
		{"unknown status", entry(`{"driver_token":"aDriverToken123456789","status":"Active"}`), `entry 1: status "Active"`},
		{"missing status", entry(`{"driver_token":"aDriverToken123456789"}`), `entry 1: status ""`},
		{"empty token", entry(`{"driver_token":"","status":"active"}`), "entry 1: driver_token is empty"},
		{"missing token", entry(`{"status":"active"}`), "entry 1: driver_token is empty"},
		{"short token", entry(`{"driver_token":"short","status":"active"}`), "entry 1: driver_token shor****: 5 characters"},
		{"long token", entry(`{"driver_token":"` + strings.Repeat("a", 81) + `","status":"active"}`), "entry 1: driver_token aaaa****: 81 characters"},
		{"bad token char", entry(`{"driver_token":"aDriverToken12345678/","status":"active"}`), "entry 1: driver_token aDri****: character 20"},
		{"duplicate token", entry(`{"driver_token":"okDriverToken123456789","status":"blocked"}`), "entry 1: duplicate driver_token okDr**** (first at entry 0)"},
		{"empty stations", entry(`{"driver_token":"aDriverToken123456789","status":"active","stations":[]}`), "entry 1: stations is empty"},
		{"bad station", entry(`{"driver_token":"aDriverToken123456789","status":"active","stations":["` + station + `","nope"]}`), `entry 1: stations[1] "nope"`},
		{"station without dashes", entry(`{"driver_token":"aDriverToken123456789","status":"active","stations":["123e4567e89b12d3a456426614174000"]}`), "entry 1: stations[0]"},
		{"station urn form", entry(`{"driver_token":"aDriverToken123456789","status":"active","stations":["urn:uuid:` + station + `"]}`), "entry 1: stations[0]"},
		{"station non-hex", entry(`{"driver_token":"aDriverToken123456789","status":"active","stations":["g23e4567-e89b-12d3-a456-426614174000"]}`), "entry 1: stations[0]"},
		{"bad expiry", entry(`{"driver_token":"aDriverToken123456789","status":"active","expires_at":"tomorrow"}`), "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Parse([]byte(tt.data))
			if err == nil {
				t.Fatalf("Parse succeeded (%d entries); want error containing %q", a.Len(), tt.want)
			}
			if !strings.HasPrefix(err.Error(), "acl: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error %q; want prefix \"acl: \" and %q", err, tt.want)
			}
		})
	}
}

func TestParseEmptyList(t *testing.T) {
	a := mustParse(t, []byte(`{"entries":[]}`))
	if a.Len() != 0 {
		t.Errorf("Len = %d; want 0", a.Len())
	}
	if st, reason := a.Decide(station, "validDriverToken1234567", now); st != session.StatusInvalid || reason != ReasonUnknownToken {
		t.Errorf("Decide on empty ACL = %q, %q", st, reason)
	}
}

func TestVersion(t *testing.T) {
	a, b := mustParse(t, testACL), mustParse(t, testACL)
	if len(a.Version()) != 16 || a.Version() != b.Version() {
		t.Errorf("versions %q, %q; want equal, 16 hex digits", a.Version(), b.Version())
	}
	if c := mustParse(t, append([]byte(" "), testACL...)); c.Version() == a.Version() {
		t.Errorf("different bytes, same version %q", c.Version())
	}
}

func TestSample(t *testing.T) {
	a := Sample()
	if a != Sample() {
		t.Error("Sample returned two different ACLs")
	}
	if a.Len() != 4 {
		t.Errorf("Len = %d; want 4", a.Len())
	}
	if a.Version() != mustParse(t, SampleJSON).Version() {
		t.Error("Sample version differs from SampleJSON's")
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		station, token string
		want           session.Status
		reason         string
	}{
		{station, "validDriverToken1234567", session.StatusAllowed, ""},
		{station, "blockedDriverToken12345", session.StatusNotAllowed, ReasonBlocked},
		{station, "stationBoundToken123456", session.StatusAllowed, ""},
		{otherStation, "stationBoundToken123456", session.StatusNotAllowed, ReasonNotAtThisStation},
		{station, "expiredDriverToken12345", session.StatusNotAllowed, ReasonExpired},
		{station, "unknownDriverToken12345", session.StatusInvalid, ReasonUnknownToken},
	}
	for _, tt := range tests {
		if got, reason := a.Decide(tt.station, tt.token, at); got != tt.want || reason != tt.reason {
			t.Errorf("Decide(%q, %q) = %q, %q; want %q, %q", tt.station, tt.token, got, reason, tt.want, tt.reason)
		}
	}
	if got, reason := a.Decide(station, "stationBoundToken123456", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)); got != session.StatusNotAllowed || reason != ReasonExpired {
		t.Errorf("station-bound token at its expiry: %q, %q", got, reason)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acl.json")
	if err := os.WriteFile(path, SampleJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if a.Len() != 4 || a.Version() != Sample().Version() {
		t.Errorf("Load: %d entries, version %s", a.Len(), a.Version())
	}

	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil || !strings.HasPrefix(err.Error(), "acl: ") {
		t.Errorf("Load of a missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"entries":[{"driver_token":"x","status":"active"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "acl: "+bad+": entry 0:") {
		t.Errorf("Load of a bad file: %v", err)
	}
}

func TestDecideAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	a := mustParse(t, testACL)
	upper := strings.ToUpper(station)
	allocs := testing.AllocsPerRun(100, func() {
		a.Decide(upper, "stationBoundToken123456", now)
		a.Decide(station, "activeDriverToken123456", now)
		a.Decide(station, "nobodyKnowsThisToken12", now)
	})
	if allocs != 0 {
		t.Errorf("Decide allocates %v times per run; want 0", allocs)
	}
}

func BenchmarkDecide(b *testing.B) {
	a := mustParse(b, testACL)
	for _, bc := range []struct{ name, station, token string }{
		{"rule=allowed", station, "activeDriverToken123456"},
		{"rule=station", strings.ToUpper(station), "stationBoundToken123456"},
		{"rule=unknown_token", station, "nobodyKnowsThisToken12"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Decide(bc.station, bc.token, now)
			}
		})
	}
}

// millionACL is a 1,000,000-entry ACL file, built once.
var millionACL = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	b.WriteString(`{"entries":[`)
	for i := range 1_000_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"driver_token":"millionDriverToken%07d","status":"active"}`, i)
	}
	b.WriteString(`]}`)
	return b.Bytes()
})

// BenchmarkParseMillion: loading a 1,000,000-entry ACL (goal: under 3 s).
func BenchmarkParseMillion(b *testing.B) {
	data := millionACL()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		a, err := Parse(data)
		if err != nil || a.Len() != 1_000_000 {
			b.Fatal(a.Len(), err)
		}
	}
}

// BenchmarkDecideMillion: a lookup in a 1,000,000-entry ACL stays O(1).
func BenchmarkDecideMillion(b *testing.B) {
	a, err := Parse(millionACL())
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tok := millionTokens[i%len(millionTokens)]
		if st, _ := a.Decide("123e4567-e89b-12d3-a456-426614174000", tok, now); st != session.StatusAllowed {
			b.Fatal(st)
		}
		i++
	}
}

var millionTokens = func() []string {
	out := make([]string, 1024)
	for i := range out {
		out[i] = fmt.Sprintf("millionDriverToken%07d", i*977)
	}
	return out
}()
