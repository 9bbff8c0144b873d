package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chargeauth/chargeauth/node"
	"github.com/chargeauth/chargeauth/persistence"
	"github.com/chargeauth/chargeauth/session"
)

// "202 means durable", at the storage level: requests acknowledged through
// the API are all in a crash clone of the filesystem, which keeps only what
// was synced.
func TestAcknowledgedMeansSynced(t *testing.T) {
	// No authorization service answers (nothing listens on port 1), so no
	// decision is written meanwhile: a synced decision would also sync the
	// accepts before it and hide an unsynced accept.
	fs := vfs.NewCrashableMem()
	svc := startService(t, node.Config{AuthzURL: "http://127.0.0.1:1", FS: fs, DecisionTimeout: time.Minute})
	url := "http://" + svc.Addr() + "/charge_point/session/"

	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				r := do(t, "POST", url, "application/json", sessionBody(station, fmt.Sprintf("durableToken%04d%08d", g, i), "https://example.com/cb"))
				if r.code != 202 {
					t.Errorf("POST: %d %s", r.code, r.body)
					return
				}
				id, _ := r.json(t)["request_id"].(string)
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // only synced data survives
	st, err := persistence.Open(persistence.Config{Dir: "data", FS: crashed})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range ids {
		if _, err := st.Get(id); err != nil {
			t.Errorf("acknowledged %s lost in the crash: %v", id, err)
		}
	}
	if len(ids) != 200 {
		t.Errorf("%d acknowledged, want 200", len(ids))
	}
}

// No callback leaves before its decision is durable: when a callback
// arrives, a crash clone of the filesystem taken at that moment (only
// synced data survives) already holds the decision it carries.
func TestNoCallbackBeforeDecisionIsStored(t *testing.T) {
	authz := startFakeAuthz(t, 0)
	recv := startReceiver(t)
	fs := vfs.NewCrashableMem()
	var mu sync.Mutex
	var bad []string
	checked := 0
	recv.onCallback = func(c callback) {
		crashed := fs.CrashClone(vfs.CrashCloneCfg{})
		st, err := persistence.Open(persistence.Config{Dir: "data", FS: crashed, Logger: quietLogger()})
		if err != nil {
			t.Errorf("open crash clone: %v", err)
			return
		}
		rec, err := st.Get(c.ID)
		_ = st.Close()
		var body struct {
			Status session.Status `json:"status"`
		}
		if jerr := json.Unmarshal([]byte(c.Body), &body); jerr != nil {
			t.Errorf("callback body %q: %v", c.Body, jerr)
		}
		mu.Lock()
		defer mu.Unlock()
		checked++
		// The exact status: "allowed" is a substring of "not_allowed".
		if err != nil || rec.State == session.StatePending || rec.Status == "" || body.Status != rec.Status {
			bad = append(bad, fmt.Sprintf("%s: %s %q %v, callback %q", c.ID, rec.State, rec.Status, err, body.Status))
		}
	}
	svc := startService(t, node.Config{AuthzURL: authz.URL, AllowPrivateCallbacks: true, FS: fs})
	var ids []string
	for i := range 30 {
		tok := tokAllowed
		if i%2 == 1 {
			tok = tokNotAllowed
		}
		ids = append(ids, mustAccept(t, svc, tok, recv.URL+"/cb"))
	}
	eventually(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := recv.count(); n < len(ids) {
			return fmt.Errorf("%d callbacks", n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if checked < len(ids) || len(bad) > 0 {
		t.Errorf("checked %d callbacks; sent before the decision was synced: %v", checked, bad)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
