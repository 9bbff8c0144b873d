package testwait

import (
	"errors"
	"testing"
	"time"
)

// Interval is how often Until checks its condition.
const Interval = 10 * time.Millisecond

// Poll calls f every interval until it returns nil, and returns nil then;
// once timeout has passed it returns f's last error. f is called at least
// once, and once more at the timeout. Poll is for goroutines that must not
// call t.Fatal; tests use Eventually.
func Poll(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		time.Sleep(min(interval, left))
	}
}

// Eventually polls f every interval until it returns nil, and fails t with
// f's last error if timeout passes first.
func Eventually(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	if err := Poll(timeout, interval, f); err != nil {
		t.Fatalf("after %v: %v", timeout, err)
	}
}

// Until polls cond every Interval until it holds, and fails t, saying what
// it waited for, if timeout passes first.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := Poll(timeout, Interval, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("waited %v for %s", timeout, what)
	}
}

var errNotYet = errors.New("testwait: not yet")
