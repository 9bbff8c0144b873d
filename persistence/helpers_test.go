package persistence

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// t0 is the fake clock's origin; test output shows times as offsets from it.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// quietLogger drops everything: Pebble logs its WAL and manifest work at Info.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// memConfig is a Config on a fresh vfs.NewMem().
func memConfig() Config {
	return Config{Dir: "db", FS: vfs.NewMem(), Logger: quietLogger()}
}

// mustOpen opens cfg and closes the store at the end of the test.
func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// pending is a new request as the front would build it.
func pending(id string, at time.Time) *session.Record {
	return &session.Record{
		ID: id,
		Request: session.Request{
			StationID:   "123e4567-e89b-12d3-a456-426614174000",
			DriverToken: "validDriverToken1234567",
			CallbackURL: "https://example.com/callback",
		},
		AcceptedAt: at,
		DecideBy:   at.Add(10 * time.Second),
		State:      session.StatePending,
	}
}

// mustAccept accepts a pending record with id.
func mustAccept(t testing.TB, s *Store, id string) {
	t.Helper()
	if err := s.Accept(pending(id, t0)); err != nil {
		t.Fatalf("accept %s: %v", id, err)
	}
}

// testID is a fixed-width id whose byte order is numeric order, as UUIDv7s are.
func testID(g, i int) string { return fmt.Sprintf("%04x-%08x", g, i) }

// formatRecord prints the fields of r that are set, times as offsets from t0.
func formatRecord(r session.Record) string {
	var b strings.Builder
	rel := func(t time.Time) string { return "+" + t.Sub(t0).String() }
	fmt.Fprintf(&b, "%s %s accepted=%s decide_by=%s", r.ID, r.State, rel(r.AcceptedAt), rel(r.DecideBy))
	if r.Status != "" {
		fmt.Fprintf(&b, " status=%s by=%s decided=%s", r.Status, r.DecidedBy, rel(r.DecidedAt))
	}
	if r.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", r.Reason)
	}
	fmt.Fprintf(&b, " attempts=%d", r.CallbackAttempts)
	if !r.NextAttemptAt.IsZero() {
		fmt.Fprintf(&b, " next=%s", rel(r.NextAttemptAt))
	}
	if r.LastError != "" {
		fmt.Fprintf(&b, " last_error=%s", r.LastError)
	}
	if !r.DeliveredAt.IsZero() {
		fmt.Fprintf(&b, " delivered=%s", rel(r.DeliveredAt))
	}
	if !r.FailedAt.IsZero() {
		fmt.Fprintf(&b, " failed=%s", rel(r.FailedAt))
	}
	if r.RoundStartAttempts != 0 {
		fmt.Fprintf(&b, " round_from=%d", r.RoundStartAttempts)
	}
	for i, rd := range r.Redeliveries {
		sep := ","
		if i == 0 {
			sep = " redeliveries="
		}
		fmt.Fprintf(&b, "%sfailed%s>redelivered%s", sep, rel(rd.FailedAt), rel(rd.At))
	}
	return b.String()
}

// fakeClock is a settable clock for Config.now, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }
