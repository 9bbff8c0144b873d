package actors

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/schedule"
	"github.com/chargeauth/chargeauth/session"
)

// A redelivered request starts a new round: an attempt at once, then the
// schedule's delays from its beginning, with --callback-max-age counted
// from the redelivery; the attempt count goes on from the rounds before,
// and each attempt keeps the receiver's answer.
func TestRedeliverStartsAFreshRoundAndKeepsCounting(t *testing.T) {
	st := openStore(t, vfs.NewMem())
	now := time.Now().UTC()
	// Failed by an earlier round of 3 attempts, decided 2.5h ago.
	rec := session.Record{ID: "01963d2a-7c4e-7b1a-9f3e-2a4b6c8d0e1f", Request: session.Request{StationID: "123e4567-e89b-12d3-a456-426614174000",
		DriverToken: "redeliverDriverToken0001", CallbackURL: "http://x/"},
		AcceptedAt: now.Add(-3 * time.Hour), DecideBy: now.Add(-3 * time.Hour).Add(10 * time.Second), State: session.StatePending}
	if err := st.Accept(&rec); err != nil {
		t.Fatal(err)
	}
	decided := now.Add(-150 * time.Minute)
	if _, err := st.Decide(rec.ID, session.StatusAllowed, "", session.ByAuthz, decided); err != nil {
		t.Fatal(err)
	}
	for i, outcome := range []session.State{session.StateDecided, session.StateDecided, session.StateFailed} {
		if _, err := st.RecordAttempt(rec.ID, persistence.Attempt{At: decided.Add(time.Duration(i) * time.Minute), Err: "500",
			StatusCode: 500, Outcome: outcome, NextAt: decided.Add(time.Duration(i+1) * time.Minute), Response: "old"}); err != nil {
			t.Fatal(err)
		}
	}

	// Every attempt of this round fails with an answer; the schedule waits
	// 2h (±20%) after the first, within a max age of 3h.
	fail := DeliveryResult{StatusCode: 503, Err: errors.New("503"), Retryable: true, Response: "busy\r\n"}
	recv := &fakeReceiver{script: []DeliveryResult{fail, fail}}
	h := startEngine(t, Config{Store: st, CallbackMaxAttempts: 2, CallbackMaxAge: 3 * time.Hour,
		CallbackSchedule: schedule.Delays{0, 2 * time.Hour}}, &fakeAuthz{}, recv)

	red, err := h.engine.Redeliver(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if red.CallbackAttempts != 3 || red.RoundStartAttempts != 3 {
		t.Fatalf("redelivered: %d attempts, round from %d; want 3 and 3 (the count goes on)", red.CallbackAttempts, red.RoundStartAttempts)
	}
	var got session.Record
	testwait.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		got, err = st.Get(rec.ID)
		if err != nil {
			return err
		}
		if got.CallbackAttempts != 4 {
			return fmt.Errorf("%d attempts, want the redelivery's at once (4 in all)", got.CallbackAttempts)
		}
		return nil
	})
	// The round's first attempt, not the record's fourth: a retry, not
	// "no attempts left"; its delay is the schedule's second (2h ±20%),
	// not cut by a max age counted from the decision (2.5h ago).
	if got.State != session.StateDecided {
		t.Fatalf("after the redelivery's first attempt: %s (%s), want decided with a retry planned", got.State, got.LastError)
	}
	last := got.Attempts[len(got.Attempts)-1]
	if wait := got.NextAttemptAt.Sub(last.At); wait < 96*time.Minute || wait > 144*time.Minute {
		t.Errorf("next attempt %v after the redelivery's first: want the schedule's 2h ±20%%", wait)
	}
	if n := len(recv.callbacks(rec.ID)); n != 1 {
		t.Errorf("%d callbacks sent, want 1", n)
	}
	if last.Response != "busy\r\n" || last.StatusCode != 503 || got.Attempts[0].Response != "old" {
		t.Errorf("attempt log %+v: want the earlier attempts kept and the last with the receiver's answer", got.Attempts)
	}
	var steps []session.State
	for _, tr := range got.Transitions() {
		steps = append(steps, tr.State)
	}
	if fmt.Sprint(steps) != "[pending decided failed redelivered]" {
		t.Errorf("transitions %v, want pending decided failed redelivered", steps)
	}
}

func TestRoundAttemptCountsFromTheRound(t *testing.T) {
	for _, tc := range []struct{ total, from, want int }{{0, 0, 1}, {2, 0, 3}, {3, 3, 1}, {5, 3, 3}} {
		if got := roundAttempt(session.Record{CallbackAttempts: tc.total, RoundStartAttempts: tc.from}); got != tc.want {
			t.Errorf("%d attempts, round from %d: attempt %d of the round, want %d", tc.total, tc.from, got, tc.want)
		}
	}
}
