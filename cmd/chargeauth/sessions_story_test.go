package main

import (
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// The whole story of a redelivered request, read from a stopped service's
// store: get shows every transition (the earlier failure, the redelivery)
// and every kept attempt numbered over the request's life, with the
// receiver's answer escaped; --json gives the same in milliseconds.
func TestSessionsGetShowsTheStory(t *testing.T) {
	dir := t.TempDir()
	st, err := persistence.Open(persistence.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const id = "0190a6f2-7c3b-7def-8a12-3456789abcde"
	t0 := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	rec := &session.Record{ID: id, Request: session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
		DriverToken: "storyDriverToken00000001", CallbackURL: "http://127.0.0.1:1/cb"},
		AcceptedAt: t0, DecideBy: t0.Add(10 * time.Second), State: session.StatePending}
	steps := []func() error{
		func() error { return st.Accept(rec) },
		func() error {
			_, err := st.Decide(id, session.StatusAllowed, "", session.ByAuthz, t0.Add(200*time.Millisecond))
			return err
		},
		func() error {
			_, err := st.RecordAttempt(id, persistence.Attempt{At: t0.Add(time.Second), Err: "callback: status 500", Outcome: session.StateFailed,
				StatusCode: 500, Took: 1234500 * time.Microsecond, Response: "oops\n\x1b[31m"})
			return err
		},
		func() error { _, err := st.Redeliver(id, t0.Add(time.Hour)); return err },
		func() error {
			_, err := st.RecordAttempt(id, persistence.Attempt{At: t0.Add(time.Hour + time.Second), Outcome: session.StateDelivered,
				StatusCode: 200, Took: 350 * time.Millisecond, Response: `{"ok":true}`})
			return err
		},
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := runCmd(t, "sessions", "get", id, "--data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^callback_attempts:\s+2$`),
		regexp.MustCompile(`(?m)^transitions \(5\):\n  1\. pending  2026-12-05T09:00:00Z\n  2\. decided  2026-12-05T09:00:00.2Z\n` +
			`  3\. failed  2026-12-05T09:00:01Z\n  4\. redelivered  2026-12-05T10:00:00Z\n  5\. delivered  2026-12-05T10:00:01Z$`),
		regexp.MustCompile(`(?m)^  1\. 2026-12-05T09:00:01Z  duration=1.2s  error=callback: status 500  response="oops\\n\\x1b\[31m"  status_code=500$`),
		regexp.MustCompile(`(?m)^  2\. 2026-12-05T10:00:01Z  duration=350ms  response={"ok":true}  status_code=200$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "storyDriverToken00000001") {
		t.Errorf("the full driver token is shown:\n%s", out)
	}

	_, out, _ = runCmd(t, "sessions", "get", id, "--data-dir", dir, "--json")
	var got struct {
		Transitions []session.Transition `json:"transitions"`
		Attempts    []struct {
			DurationMS float64 `json:"duration_ms"`
			Response   string  `json:"response"`
		} `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v: %s", err, out)
	}
	if len(got.Transitions) != 5 || got.Transitions[3].State != session.Redelivered || !got.Transitions[3].At.Equal(t0.Add(time.Hour)) {
		t.Errorf("--json transitions %+v", got.Transitions)
	}
	if len(got.Attempts) != 2 || got.Attempts[0].DurationMS != 1234.5 || got.Attempts[0].Response != "oops\n\x1b[31m" {
		t.Errorf("--json attempts %+v", got.Attempts)
	}
}

// A log that keeps only the last attempts numbers them over the request's
// life.
func TestPrintRecordNumbersAttemptsOverTheLife(t *testing.T) {
	var b strings.Builder
	rec := map[string]any{"request_id": "x", "callback_attempts": float64(12),
		"attempts": []any{map[string]any{"at": "t11", "status_code": float64(500)}, map[string]any{"at": "t12", "status_code": float64(200)}}}
	if err := printRecord(&b, rec); err != nil {
		t.Fatal(err)
	}
	if want := "attempts (last 2 of 12):\n  11. t11  status_code=500\n  12. t12  status_code=200\n"; !strings.Contains(b.String(), want) {
		t.Errorf("got:\n%s\nwant it to hold:\n%s", b.String(), want)
	}
}
