package testwait

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the message instead of
// failing the test.
type recorder struct {
	testing.TB
	fatal string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int64
	r := &recorder{TB: t}
	Eventually(r, 5*time.Second, time.Millisecond, func() error {
		if calls.Add(1) < 3 {
			return errors.New("not three")
		}
		return nil
	})
	if r.fatal != "" || calls.Load() != 3 {
		t.Fatalf("fatal %q after %d calls, want none after 3", r.fatal, calls.Load())
	}
}

func TestEventuallyFailsWithTheLastError(t *testing.T) {
	var calls atomic.Int64
	r := &recorder{TB: t}
	start := time.Now()
	Eventually(r, 30*time.Millisecond, 5*time.Millisecond, func() error {
		return fmt.Errorf("call %d", calls.Add(1))
	})
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Errorf("gave up after %v, before the timeout", took)
	}
	if want := fmt.Sprintf("call %d", calls.Load()); !strings.HasSuffix(r.fatal, want) {
		t.Errorf("fatal %q, want it to end with the last error %q", r.fatal, want)
	}
	if calls.Load() < 2 {
		t.Errorf("%d calls: want the condition checked again at the timeout", calls.Load())
	}
}

func TestUntilSaysWhatItWaitedFor(t *testing.T) {
	r := &recorder{TB: t}
	Until(r, 10*time.Millisecond, "the moon", func() bool { return false })
	if !strings.Contains(r.fatal, "the moon") {
		t.Errorf("fatal %q, want it to name what was awaited", r.fatal)
	}
	r = &recorder{TB: t}
	Until(r, time.Second, "now", func() bool { return true })
	if r.fatal != "" {
		t.Errorf("fatal %q for a condition that holds", r.fatal)
	}
}

func TestPollChecksOnceWithNoTime(t *testing.T) {
	var calls int
	err := Poll(0, time.Hour, func() error { calls++; return errors.New("no") })
	if err == nil || calls != 1 {
		t.Errorf("Poll(0) = %v after %d calls, want the error after 1", err, calls)
	}
}
