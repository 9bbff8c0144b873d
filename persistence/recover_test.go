package persistence

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

// faultToggle fails every write to the filesystem while it is on, and
// counts the writes it failed.
type faultToggle struct {
	*errorfs.Toggle
	failed atomic.Int64
}

// writeFault returns a faultToggle, off.
func writeFault() *faultToggle {
	f := &faultToggle{}
	f.Toggle = &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			f.failed.Add(1)
			return errorfs.ErrInjected
		}
		return nil
	})}
	return f
}

// openFaulty opens a store whose filesystem fails every write while the
// returned toggle is on; recovered counts its reopenings.
func openFaulty(t *testing.T) (*Store, *faultToggle, *atomic.Int32) {
	t.Helper()
	fault := writeFault()
	cfg := memConfig()
	cfg.FS = errorfs.Wrap(vfs.NewMem(), fault)
	cfg.recoverMin, cfg.recoverMax = 5*time.Millisecond, 20*time.Millisecond
	s := mustOpen(t, cfg)
	recovered := new(atomic.Int32)
	s.OnRecover(func() { recovered.Add(1) })
	return s, fault, recovered
}

// A failed write is ErrUnavailable, not a crash; nothing of it stays; the
// store reopens Pebble by itself once writes work again, keeps what was
// written before, and tells its OnRecover funcs.
func TestWriteFaultRecovers(t *testing.T) {
	s, fault, recovered := openFaulty(t)

	mustAccept(t, s, "before")
	fault.On()
	if err := s.Accept(pending("during", t0)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Accept during the fault = %v, want ErrUnavailable", err)
	}
	// Broken: every call refuses at once, without touching Pebble.
	if _, err := s.Decide("before", session.StatusAllowed, "", session.ByAuthz, t0); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Decide while broken = %v, want ErrUnavailable", err)
	}
	// The store tries to recover while the fault lasts: its probes fail.
	failed := fault.failed.Load()
	testwait.Until(t, 5*time.Second, "two recovery attempts to fail", func() bool { return fault.failed.Load() >= failed+2 })
	if recovered.Load() != 0 {
		t.Fatal("recovered while writes still fail")
	}
	fault.Off()
	testwait.Until(t, 5*time.Second, "the store to recover after the fault cleared", func() bool { return recovered.Load() != 0 })
	if _, err := s.Get("before"); err != nil {
		t.Errorf("a record written before the fault: %v", err)
	}
	if _, err := s.Get("during"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the failed accept left something behind: %v", err)
	}
	if n := s.Count(session.StatePending); n != 1 {
		t.Errorf("Count(pending) = %d after reopen, want 1", n)
	}
	mustAccept(t, s, "after")
	if _, err := s.Decide("before", session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
		t.Errorf("Decide after recovery: %v", err)
	}
}

// Concurrent accepts during a fault: each is nil or ErrUnavailable, and
// every nil one is there after recovery.
func TestWriteFaultConcurrentAccepts(t *testing.T) {
	s, fault, recovered := openFaulty(t)

	type result struct {
		id  string
		err error
	}
	results := make(chan result, 400)
	for g := range 8 {
		go func() {
			for i := range 50 {
				id := fmt.Sprintf("g%d-%03d", g, i)
				if g == 0 && i == 10 {
					fault.On()
				}
				results <- result{id, s.Accept(pending(id, t0))}
			}
		}()
	}
	var ok []string
	for range 400 {
		r := <-results
		switch {
		case r.err == nil:
			ok = append(ok, r.id)
		case errors.Is(r.err, ErrUnavailable):
		default:
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
	fault.Off()
	testwait.Until(t, 5*time.Second, "the store to recover", func() bool { return recovered.Load() != 0 })
	for _, id := range ok {
		if _, err := s.Get(id); err != nil {
			t.Errorf("%s was acknowledged but is gone: %v", id, err)
		}
	}
	if int(s.Count(session.StatePending)) != len(ok) {
		t.Errorf("Count %d, acknowledged %d", s.Count(session.StatePending), len(ok))
	}
}
