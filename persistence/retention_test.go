package persistence

import (
	"errors"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
)

func TestExpire(t *testing.T) {
	s := mustOpen(t, memConfig())
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, id := range []string{"a1", "a2", "a3", "a4", "a5"} {
		mustAccept(t, s, id)
	}
	// a1 delivered at +1m, a2 failed at +2m, a3 delivered at +10m,
	// a4 decided (never expired), a5 pending (never expired).
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		if _, err := s.Decide(id, session.StatusAllowed, "", session.ByAuthz, at(0)); err != nil {
			t.Fatal(err)
		}
	}
	mustAttempt := func(id string, outcome session.State, when time.Time) {
		t.Helper()
		if _, err := s.RecordAttempt(id, Attempt{At: when, Outcome: outcome}); err != nil {
			t.Fatal(err)
		}
	}
	mustAttempt("a1", session.StateDelivered, at(time.Minute))
	mustAttempt("a2", session.StateFailed, at(2*time.Minute))
	mustAttempt("a3", session.StateDelivered, at(10*time.Minute))

	n, err := s.Expire(at(5*time.Minute), 0)
	if err != nil || n != 2 {
		t.Fatalf("Expire = %d, %v; want 2 (a1, a2)", n, err)
	}
	for _, id := range []string{"a1", "a2"} {
		if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want not found", id, err)
		}
	}
	for id, st := range map[string]session.State{"a3": session.StateDelivered, "a4": session.StateDecided, "a5": session.StatePending} {
		if r, err := s.Get(id); err != nil || r.State != st {
			t.Errorf("%s: %v %v, want kept as %s", id, r.State, err, st)
		}
	}
	if s.Count(session.StateDelivered) != 1 || s.Count(session.StateFailed) != 0 {
		t.Errorf("counts delivered %d failed %d, want 1 and 0", s.Count(session.StateDelivered), s.Count(session.StateFailed))
	}
	var scanned []string
	_ = s.Scan(session.StateFailed, "", 0, func(r session.Record) bool { scanned = append(scanned, r.ID); return true })
	if len(scanned) != 0 {
		t.Errorf("index still lists %v", scanned)
	}

	// The limit bounds one call.
	n, err = s.Expire(at(time.Hour), 1)
	if err != nil || n != 1 {
		t.Fatalf("Expire(limit 1) = %d, %v", n, err)
	}
	if n, _ := s.Expire(at(time.Hour), 1); n != 0 {
		t.Errorf("nothing left to expire, got %d", n)
	}
}
