package authz

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestAuthorizeBatchBody(t *testing.T) {
	var logs logBuffer
	_, url := startServer(t, Config{Logger: debugLogger(&logs)})
	item := func(st, tok string) string {
		return `{"station_id":"` + st + `","driver_token":"` + tok + `"}`
	}
	tooMany := "[" + strings.Repeat(item(station, "validDriverToken1234567")+",", maxBatchItems) + item(station, "x") + "]"
	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"decisions in order", "[" + item(station, "validDriverToken1234567") + "," +
			item(station, "blockedDriverToken12345") + "," +
			item(otherStation, "stationBoundToken123456") + "," +
			item(station, "neverHeardOfThisToken1") + "," +
			item(strings.ToUpper(station), "stationBoundToken123456") + "]", 200,
			`[{"status":"allowed"},{"status":"not_allowed","reason":"blocked"},{"status":"not_allowed","reason":"not_at_this_station"},{"status":"invalid","reason":"unknown_token"},{"status":"allowed"}]`},
		{"one item", " \n[" + item(station, "expiredDriverToken12345") + "]", 200, `[{"status":"not_allowed","reason":"expired"}]`},
		{"empty body", ``, 400, `{"status":"failed","error":"body must be a JSON array of {station_id, driver_token}"}`},
		{"an object", item(station, "validDriverToken1234567"), 400, `{"status":"failed","error":"body must be a JSON array of {station_id, driver_token}"}`},
		{"null", `null`, 400, `{"status":"failed","error":"body must be a JSON array of {station_id, driver_token}"}`},
		{"empty array", `[]`, 400, `{"status":"failed","error":"batch is empty: at least one item is required"}`},
		{"bad json", `[{"station_id":`, 400, `{"status":"failed","error":"bad JSON: unexpected end of JSON input"}`},
		{"wrong item type", `[1]`, 400, `"error":"bad JSON: json: cannot unmarshal number`},
		{"missing token in item 1", "[" + item(station, "validDriverToken1234567") + `,{"station_id":"` + station + `"}]`, 400,
			`{"status":"failed","error":"item 1: driver_token is required"}`},
		{"missing station in item 0", `[{"driver_token":"validDriverToken1234567"}]`, 400, `{"status":"failed","error":"item 0: station_id is required"}`},
		{"missing both", `[{}]`, 400, `{"status":"failed","error":"item 0: station_id is required; driver_token is required"}`},
		{"too many", tooMany, 400, fmt.Sprintf(`{"status":"failed","error":"batch of %d items: at most %d"}`, maxBatchItems+1, maxBatchItems)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := do(t, "POST", url+"/authorize/batch", tt.body)
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Errorf("POST /authorize/batch %s: %d %s; want %d %s", tt.name, code, body, tt.code, tt.want)
			}
		})
	}
	if code, _, allow := do(t, "GET", url+"/authorize/batch", ""); code != 405 || allow != "POST" {
		t.Errorf("GET /authorize/batch: %d, Allow %q; want 405, POST", code, allow)
	}
	out := logs.String()
	if !strings.Contains(out, `"driver_token":"bloc****"`) || !strings.Contains(out, `"batch_item":1`) {
		t.Errorf("no masked token with its batch item in the debug log:\n%s", out)
	}
	if strings.Contains(out, "blockedDriverToken12345") {
		t.Error("log holds a full token")
	}
}

// FuzzParseBatch: parsing never panics; what parses has 1 to maxBatchItems
// items, each with both fields, and is what encoding/json reads; an error
// never quotes a token. Seeds are the f.Add values below and
// testdata/fuzz/FuzzParseBatch.
func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{
		`[{"station_id":"` + station + `","driver_token":"validDriverToken1234567"}]`,
		`[{"station_id":"a","driver_token":"b"},{"station_id":"c","driver_token":"d","x":[1]}]`,
		`[]`, `null`, `{}`, `[{}]`, `[1]`, ` [ ] `, `[{"station_id":"a\u0000","driver_token":"\ud800"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		reqs, err := parseBatch(body)
		if err != nil {
			if reqs != nil {
				t.Fatalf("an error came with %d items", len(reqs))
			}
			var probe []authorizeRequest
			if json.Unmarshal(body, &probe) == nil {
				for _, r := range probe {
					if len(r.DriverToken) >= 4 && strings.Contains(err.Error(), r.DriverToken) {
						t.Fatalf("error %q quotes a token", err)
					}
				}
			}
			return
		}
		if len(reqs) == 0 || len(reqs) > maxBatchItems {
			t.Fatalf("%d items parsed", len(reqs))
		}
		var want []authorizeRequest
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatalf("parsed what encoding/json refuses: %v", err)
		}
		for i, r := range reqs {
			if r.StationID == "" || r.DriverToken == "" {
				t.Fatalf("item %d parsed without a field: %+v", i, r)
			}
			if r != want[i] {
				t.Fatalf("item %d: %+v; encoding/json reads %+v", i, r, want[i])
			}
		}
	})
}

// The batch endpoint decides by the same rules as POST /authorize, item by
// item, after an ACL swap too.
func TestAuthorizeBatchSameRulesAsSingle(t *testing.T) {
	s, url := startServer(t, Config{})
	s.SetACL(mustParseACL(t, `{"entries":[{"driver_token":"swappedInToken123456789","status":"active","stations":["`+otherStation+`"]}]}`))
	tokens := []string{"swappedInToken123456789", "validDriverToken1234567"}
	stations := []string{station, otherStation}
	var body strings.Builder
	body.WriteString("[")
	var singles []string
	for _, tok := range tokens {
		for _, st := range stations {
			if body.Len() > 1 {
				body.WriteString(",")
			}
			one := `{"station_id":"` + st + `","driver_token":"` + tok + `"}`
			body.WriteString(one)
			_, got, _ := do(t, "POST", url+"/authorize", one)
			singles = append(singles, got)
		}
	}
	body.WriteString("]")
	code, got, _ := do(t, "POST", url+"/authorize/batch", body.String())
	if want := "[" + strings.Join(singles, ",") + "]"; code != 200 || got != want {
		t.Errorf("batch: %d %s; the single calls say %s", code, got, want)
	}
}
