package persistence

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestTransitions runs testdata/transitions. Commands:
//
//	accept id=<id> [state=<state>]     Accept at the clock's now (state: to test refusals)
//	advance d=<duration>               move the clock
//	decide id=<id> status=<s> by=<b> [reason=<r>]
//	attempt id=<id> outcome=<state> [err=<e>] [next=<duration>] [code=<n>] [took=<duration>]
//	                                   the input, if any, is the response body
//	redeliver id=<id>
//	get id=<id>
//	story id=<id>                      the record's transitions, then its attempt log
//	scan state=<s> [after=<id>] [limit=<n>] [stop=<n>]   stop: fn returns false after n records
//	list [state=<s>] [before=<id>] [limit=<n>]
//	due [ahead=<duration>] [after=<id>|before=<id>] [limit=<n>] [stop=<n>]
//	                                   ScanDue until now+ahead, from after
//	                                   (or just before) id's entry
//	due skip=<id,...> [ahead=<duration>] [limit=<n>] [stop=<n>]
//	                                   ScanDueExcept: from the start, passing
//	                                   over the ids given
//	count [state=<s>]                  no state: every state and the total
//	reopen                             Close, then Open on the same FS
//	close
//
// Times print as offsets from t0. A refused transition prints the error and
// the record as it stands. Refresh with: go test ./persistence -run TestTransitions -rewrite
func TestTransitions(t *testing.T) {
	fs := vfs.NewMem()
	open := func() *Store {
		s, err := Open(Config{Dir: "db", FS: fs, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	defer func() { _ = s.Close() }()
	now := t0

	datadriven.RunTest(t, "testdata/transitions", func(t *testing.T, d *datadriven.TestData) string {
		str := func(key, def string) string {
			v := def
			d.MaybeScanArgs(t, key, &v)
			return v
		}
		dur := func(key string, def time.Duration) time.Duration {
			v := str(key, "")
			if v == "" {
				return def
			}
			x, err := time.ParseDuration(v)
			if err != nil {
				d.Fatalf(t, "%s: %v", key, err)
			}
			return x
		}
		num := func(key string) int {
			n := 0
			d.MaybeScanArgs(t, key, &n)
			return n
		}
		result := func(r session.Record, err error) string {
			if err != nil {
				if r.ID == "" {
					return "error: " + err.Error()
				}
				return "error: " + err.Error() + "\n" + formatRecord(r)
			}
			return formatRecord(r)
		}
		id := str("id", "")

		switch d.Cmd {
		case "accept":
			rec := pending(id, now)
			rec.State = session.State(str("state", string(session.StatePending)))
			if err := s.Accept(rec); err != nil {
				return "error: " + err.Error()
			}
			return "ok"
		case "advance":
			now = now.Add(dur("d", 0))
			return fmt.Sprintf("now=+%s", now.Sub(t0))
		case "decide":
			return result(s.Decide(id, session.Status(str("status", "")), str("reason", ""),
				session.DecidedBy(str("by", "")), now))
		case "attempt":
			return result(s.RecordAttempt(id, Attempt{
				At:         now,
				Err:        str("err", ""),
				Outcome:    session.State(str("outcome", "")),
				NextAt:     now.Add(dur("next", time.Second)),
				StatusCode: num("code"),
				Took:       dur("took", 0),
				Response:   strings.TrimSuffix(d.Input, "\n"),
			}))
		case "redeliver":
			return result(s.Redeliver(id, now))
		case "get":
			return result(s.Get(id))
		case "story":
			r, err := s.Get(id)
			if err != nil {
				return "error: " + err.Error()
			}
			var b strings.Builder
			for _, tr := range r.Transitions() {
				fmt.Fprintf(&b, "%s +%s\n", tr.State, tr.At.Sub(t0))
			}
			for _, a := range r.Attempts {
				fmt.Fprintf(&b, "attempt +%s code=%d err=%q took_ms=%g response=%q\n",
					a.At.Sub(t0), a.StatusCode, a.Error, a.DurationMS, a.Response)
			}
			return b.String()
		case "scan":
			var out []string
			stop := num("stop")
			err := s.Scan(session.State(str("state", "")), str("after", ""), num("limit"), func(r session.Record) bool {
				out = append(out, formatRecord(r))
				return stop == 0 || len(out) < stop
			})
			if err != nil {
				out = append(out, "error: "+err.Error())
			}
			if len(out) == 0 {
				return "(none)"
			}
			return strings.Join(out, "\n")
		case "due":
			var pos DuePos
			for _, arg := range []string{"after", "before"} {
				if !d.HasArg(arg) {
					continue
				}
				rec, err := s.Get(str(arg, ""))
				if err != nil {
					return "error: " + err.Error()
				}
				if pos = DuePosBefore(rec); arg == "after" {
					pos = DuePos{At: rec.NextAttemptAt, ID: rec.ID}
				}
			}
			var out []string
			stop := num("stop")
			var (
				next time.Time
				err  error
			)
			if d.HasArg("skip") {
				skip := map[string]bool{}
				for _, id := range strings.Split(str("skip", ""), ",") {
					skip[id] = true
				}
				next, err = s.ScanDueExcept(func(id string) bool { return skip[id] }, now.Add(dur("ahead", 0)), num("limit"), func(r session.Record) bool {
					out = append(out, formatRecord(r))
					return stop == 0 || len(out) < stop
				})
			} else {
				next, err = s.ScanDue(pos, now.Add(dur("ahead", 0)), num("limit"), func(p DuePos, r session.Record) bool {
					if !p.At.Equal(r.NextAttemptAt) || p.ID != r.ID {
						t.Errorf("position %v/%s for %s", p.At, p.ID, formatRecord(r))
					}
					out = append(out, formatRecord(r))
					return stop == 0 || len(out) < stop
				})
			}
			if err != nil {
				out = append(out, "error: "+err.Error())
			}
			if len(out) == 0 {
				out = append(out, "(none)")
			}
			if !next.IsZero() {
				out = append(out, fmt.Sprintf("next=+%s", next.Sub(t0)))
			}
			return strings.Join(out, "\n")
		case "list":
			recs, err := s.List(session.State(str("state", "")), str("before", ""), num("limit"))
			if err != nil {
				return "error: " + err.Error()
			}
			if len(recs) == 0 {
				return "(none)"
			}
			out := make([]string, len(recs))
			for i, r := range recs {
				out[i] = formatRecord(r)
			}
			return strings.Join(out, "\n")
		case "count":
			if d.HasArg("state") {
				return fmt.Sprint(s.Count(session.State(str("state", ""))))
			}
			var b strings.Builder
			for _, st := range states {
				fmt.Fprintf(&b, "%s=%d ", st, s.Count(st))
			}
			fmt.Fprintf(&b, "all=%d", s.Count(""))
			return b.String()
		case "reopen":
			if err := s.Close(); err != nil {
				return "error: " + err.Error()
			}
			s = open()
			return "ok"
		case "close":
			if err := s.Close(); err != nil {
				return "error: " + err.Error()
			}
			return "ok"
		default:
			d.Fatalf(t, "unknown command %q", d.Cmd)
			return ""
		}
	})
}

// Redeliveries are kept up to session.MaxRedeliveryLog, the newest; the
// attempt count goes on through every round.
func TestRedeliverKeepsBoundedHistory(t *testing.T) {
	s := mustOpen(t, memConfig())
	now := t0
	if err := s.Accept(pending("r", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decide("r", session.StatusAllowed, "", session.ByAuthz, now); err != nil {
		t.Fatal(err)
	}
	rounds := session.MaxRedeliveryLog + 3
	for i := range rounds {
		now = now.Add(time.Minute)
		if _, err := s.RecordAttempt("r", Attempt{At: now, Err: "x", Outcome: session.StateFailed}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
		rec, err := s.Redeliver("r", now)
		if err != nil {
			t.Fatal(err)
		}
		if rec.CallbackAttempts != i+1 || rec.RoundStartAttempts != i+1 {
			t.Fatalf("round %d: attempts %d, round from %d; want %d for both", i, rec.CallbackAttempts, rec.RoundStartAttempts, i+1)
		}
	}
	rec, err := s.Get("r")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Redeliveries) != session.MaxRedeliveryLog {
		t.Fatalf("%d redeliveries kept, want %d", len(rec.Redeliveries), session.MaxRedeliveryLog)
	}
	if last := rec.Redeliveries[len(rec.Redeliveries)-1]; !last.At.Equal(now) || !last.FailedAt.Equal(now.Add(-time.Minute)) {
		t.Errorf("newest redelivery %+v, want failed at %v, redelivered at %v", last, now.Add(-time.Minute), now)
	}
	if first := rec.Redeliveries[0]; !first.At.Equal(t0.Add(time.Duration(2*(rounds-session.MaxRedeliveryLog+1)) * time.Minute)) {
		t.Errorf("oldest kept redelivery %+v: the oldest should have been dropped", first)
	}
}

// DecideOwned writes the same decision as Decide (record, state index,
// due entry, counts), from the record its caller holds, without reading
// it back: a field only the caller's copy has reaches the store. A copy
// that is not pending is refused and nothing is written.
func TestDecideOwned(t *testing.T) {
	s := mustOpen(t, memConfig())
	a, b := testID(0, 1), testID(0, 2)
	mustAccept(t, s, a)
	mustAccept(t, s, b)
	at := t0.Add(time.Second)
	want, err := s.Decide(a, session.StatusAllowed, "", session.ByAuthz, at)
	if err != nil {
		t.Fatal(err)
	}
	held := pending(b, t0)
	got, err := s.DecideOwned(held, session.StatusAllowed, "", session.ByAuthz, at)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.Get(b)
	if err != nil {
		t.Fatal(err)
	}
	want.ID = b
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(stored) != fmt.Sprint(want) {
		t.Fatalf("DecideOwned returned %+v, stored %+v; Decide made %+v", got, stored, want)
	}
	if n := s.Count(session.StateDecided); n != 2 || s.Count(session.StatePending) != 0 {
		t.Errorf("counts: decided %d, pending %d; want 2, 0", n, s.Count(session.StatePending))
	}
	if keys := dueKeys(t, s); len(keys) != 2 {
		t.Errorf("due index %v: want both", keys)
	}

	// Not read back: what the owner holds is what is written.
	c := testID(0, 3)
	mustAccept(t, s, c)
	held = pending(c, t0)
	held.Request.CallbackURL = "https://example.com/held-copy"
	if _, err := s.DecideOwned(held, session.StatusNotAllowed, "", session.ByAuthz, at); err != nil {
		t.Fatal(err)
	}
	if stored, err = s.Get(c); err != nil || stored.CallbackURL != held.Request.CallbackURL || stored.Status != session.StatusNotAllowed {
		t.Fatalf("stored %+v, %v: want the held copy, decided not_allowed", stored, err)
	}

	// The state check is on the held copy.
	if _, err := s.DecideOwned(&stored, session.StatusAllowed, "", session.ByAuthz, at); !errors.Is(err, ErrWrongState) {
		t.Fatalf("decide a decided copy: %v, want ErrWrongState", err)
	}
	if again, _ := s.Get(c); again.Status != session.StatusNotAllowed {
		t.Errorf("a refused DecideOwned changed the record: %+v", again)
	}
	if _, err := s.DecideOwned(&session.Record{}, session.StatusAllowed, "", session.ByAuthz, at); err == nil {
		t.Error("a record without an id is decided")
	}
}
