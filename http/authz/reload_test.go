package authz

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/acl"
	"github.com/chargeauth/chargeauth/internal/testwait"
	"github.com/chargeauth/chargeauth/session"
)

const reloadToken = "reloadDriverToken000001"

func writeACL(t *testing.T, path, status string) {
	t.Helper()
	body := `{"entries":[{"driver_token":"` + reloadToken + `","status":"` + status + `"}]}`
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // replace atomically, as config management does
		t.Fatal(err)
	}
}

// activeACL writes an ACL file with reloadToken active in a fresh
// directory and returns its path and the list loaded from it.
func activeACL(t *testing.T) (string, *acl.ACL) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "acl.json")
	writeACL(t, path, "active")
	a, err := acl.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, a
}

// The ACL file is watched: a change is picked up, atomically; an invalid
// file keeps the old list.
func TestWatchReloadsACL(t *testing.T) {
	path, a := activeACL(t)
	srv, url := startServer(t, Config{ACL: a, Logger: debugLogger(&logBuffer{})})
	stop := make(chan struct{})
	defer close(stop)
	go srv.Watch(path, 5*time.Millisecond, stop)

	c := mustClient(t, url)
	status := func() session.Status {
		t.Helper()
		st, _, err := c.Authorize(time.Now().Add(2*time.Second), "123e4567-e89b-12d3-a456-426614174000", reloadToken)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := status(); st != session.StatusAllowed {
		t.Fatalf("before: %s", st)
	}
	v1 := srv.acl.Load().Version()

	writeACL(t, path, "blocked")
	testwait.Until(t, 5*time.Second, "the watcher to load the new list", func() bool { return status() == session.StatusNotAllowed })
	v2 := srv.acl.Load().Version()
	if v2 == v1 {
		t.Error("the version did not change")
	}

	// An invalid file: the old list stays.
	if err := os.WriteFile(path, []byte(`{"entries":[{"driver_token":"x","status":"maybe"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	failures := srv.ACLStatus().ReloadFailures
	if err := srv.Reload(path); err == nil {
		t.Error("Reload of an invalid file should fail")
	}
	// The watcher sees it too, and fails (before or after the Reload).
	testwait.Until(t, 5*time.Second, "the watcher to fail on the invalid file", func() bool {
		return srv.ACLStatus().ReloadFailures >= failures+2
	})
	if st := status(); st != session.StatusNotAllowed || srv.acl.Load().Version() != v2 {
		t.Errorf("after an invalid file: %s, version %s (want the old list, %s)", st, srv.acl.Load().Version(), v2)
	}
}

// A change made after the ACL was loaded and before the watcher starts is
// picked up at the watcher's first check (it does not take the changed
// file for its starting point).
func TestWatchSeesAChangeBeforeItStarted(t *testing.T) {
	path, a := activeACL(t)
	srv := NewServer(Config{ACL: a, Logger: debugLogger(&logBuffer{})})
	writeACL(t, path, "blocked") // before the watcher runs
	stop := make(chan struct{})
	defer close(stop)
	go srv.Watch(path, time.Millisecond, stop)
	testwait.Until(t, 10*time.Second, "the watcher to load the list changed before it started", func() bool {
		return srv.acl.Load().Version() != a.Version()
	})
}

// ACLStatus follows reloads: a good one changes the version and the load
// time, a bad one counts a failure and changes neither.
func TestACLStatusFollowsReloads(t *testing.T) {
	path, a := activeACL(t)
	start := time.Now()
	srv := NewServer(Config{ACL: a, Logger: debugLogger(&logBuffer{})})
	st0 := srv.ACLStatus()
	if st0.Version != a.Version() || st0.Entries != 1 || st0.ReloadFailures != 0 || st0.LoadedAt.Before(start.Add(-time.Second)) {
		t.Fatalf("at start: %+v (want version %s, 1 entry, no failures, loaded now)", st0, a.Version())
	}

	writeACL(t, path, "blocked")
	if err := srv.Reload(path); err != nil {
		t.Fatal(err)
	}
	st1 := srv.ACLStatus()
	if st1.Version == st0.Version || st1.LoadedAt.Before(st0.LoadedAt) || st1.ReloadFailures != 0 {
		t.Fatalf("after a good reload: %+v, before %+v", st1, st0)
	}

	if err := os.WriteFile(path, []byte(`{"entries":[{"driver_token":"x","status":"maybe"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := srv.Reload(path); err == nil {
		t.Fatal("Reload of an invalid file should fail")
	}
	st2 := srv.ACLStatus()
	if st2.ReloadFailures != 1 || st2.Version != st1.Version || !st2.LoadedAt.Equal(st1.LoadedAt) {
		t.Fatalf("after a bad reload: %+v, want 1 failure and %+v otherwise", st2, st1)
	}
}
