package authz

import (
	"os"
	"strings"
	"testing"
	"time"
)

// A reload of a file whose content did not change (touched, or rewritten
// with the same bytes) replaces nothing and logs no "acl replaced", only
// "acl unchanged" at debug; a changed file is replaced and logged once.
func TestReloadOfSameContentLogsNoReplace(t *testing.T) {
	path, a := activeACL(t)
	var logs logBuffer
	srv := NewServer(Config{ACL: a, Logger: debugLogger(&logs)})
	loaded := srv.ACLStatus().LoadedAt

	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil { // touched
		t.Fatal(err)
	}
	if err := srv.Reload(path); err != nil {
		t.Fatal(err)
	}
	writeACL(t, path, "active") // the same bytes, a new file
	if err := srv.Reload(path); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "acl replaced"); n != 0 {
		t.Errorf("%d 'acl replaced' lines for an unchanged file:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `"level":"DEBUG","msg":"authz: acl unchanged"`); n != 2 {
		t.Errorf("%d 'acl unchanged' debug lines, want 2:\n%s", n, logs.String())
	}
	if srv.acl.Load() != a {
		t.Error("the loaded ACL was swapped for one with the same content")
	}
	if st := srv.ACLStatus(); st.LoadedAt.Before(loaded) || st.Version != a.Version() || st.ReloadFailures != 0 {
		t.Errorf("status after same-content reloads: %+v", st)
	}

	writeACL(t, path, "blocked")
	if err := srv.Reload(path); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), `"msg":"authz: acl replaced"`); n != 1 {
		t.Errorf("%d 'acl replaced' lines after a change, want 1:\n%s", n, logs.String())
	}
	if srv.acl.Load().Version() == a.Version() {
		t.Error("a changed file was not loaded")
	}
}
