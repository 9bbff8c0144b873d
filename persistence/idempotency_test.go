package persistence

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func idem(key, body string) Idempotency {
	return Idempotency{Key: key, Hash: sha256.Sum256([]byte(body)), TTL: 24 * time.Hour}
}

// The same key within the TTL answers with the first request, a different
// body with ErrIdempotencyMismatch; neither writes anything. After the TTL
// the key is free and starts a new request.
func TestAcceptIdempotent(t *testing.T) {
	s := mustOpen(t, memConfig())
	if _, replayed, err := s.AcceptIdempotent(pending("a", t0), idem("k1", "body")); err != nil || replayed {
		t.Fatalf("first accept: replayed %v, %v", replayed, err)
	}
	prior, replayed, err := s.AcceptIdempotent(pending("b", t0.Add(23*time.Hour)), idem("k1", "body"))
	if err != nil || !replayed || prior.ID != "a" {
		t.Fatalf("same key, same body: %s replayed %v, %v; want a, true", prior.ID, replayed, err)
	}
	prior, replayed, err = s.AcceptIdempotent(pending("c", t0.Add(time.Hour)), idem("k1", "other body"))
	if !errors.Is(err, ErrIdempotencyMismatch) || replayed || prior.ID != "a" {
		t.Fatalf("same key, other body: %s replayed %v, %v; want a and ErrIdempotencyMismatch", prior.ID, replayed, err)
	}
	for _, id := range []string{"b", "c"} {
		if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s was written: %v", id, err)
		}
	}
	if n := s.Count(session.StatePending); n != 1 {
		t.Errorf("%d pending, want 1", n)
	}
	// Another key is another request.
	if _, replayed, err := s.AcceptIdempotent(pending("d", t0), idem("k2", "body")); err != nil || replayed {
		t.Fatalf("other key: replayed %v, %v", replayed, err)
	}
	// 24h later the key is free: a new request, which the key now names.
	if _, replayed, err := s.AcceptIdempotent(pending("e", t0.Add(24*time.Hour)), idem("k1", "other body")); err != nil || replayed {
		t.Fatalf("after the TTL: replayed %v, %v; want a new request", replayed, err)
	}
	prior, replayed, err = s.AcceptIdempotent(pending("f", t0.Add(25*time.Hour)), idem("k1", "other body"))
	if err != nil || !replayed || prior.ID != "e" {
		t.Fatalf("after the TTL, again: %s replayed %v, %v; want e", prior.ID, replayed, err)
	}
}

// Of many concurrent accepts with one key exactly one is accepted; the
// others answer with its id.
func TestAcceptIdempotentConcurrent(t *testing.T) {
	s := mustOpen(t, memConfig())
	const n = 64
	ids := make([]string, n)
	var accepted int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("id-%02d", i)
			prior, replayed, err := s.AcceptIdempotent(pending(id, t0), idem("same", "body"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if replayed {
				ids[i] = prior.ID
			} else {
				ids[i] = id
				accepted++
			}
		}()
	}
	wg.Wait()
	if accepted != 1 {
		t.Fatalf("%d accepted, want 1", accepted)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("answers name %s and %s", ids[0], id)
		}
	}
	if c := s.Count(session.StatePending); c != 1 {
		t.Errorf("%d pending, want 1", c)
	}
}

// The key is durable with the accept: after a crash that keeps only synced
// data, the same key still answers with the first request.
func TestAcceptIdempotentDurable(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := Open(Config{Dir: "db", FS: fs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AcceptIdempotent(pending("a", t0), idem("k", "body")); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	_ = s.Close()
	s2 := mustOpen(t, Config{Dir: "db", FS: crashed, Logger: quietLogger()})
	prior, replayed, err := s2.AcceptIdempotent(pending("b", t0.Add(time.Minute)), idem("k", "body"))
	if err != nil || !replayed || prior.ID != "a" {
		t.Fatalf("after the crash: %s replayed %v, %v; want a", prior.ID, replayed, err)
	}
}

// Expiry deletes the keys taken before the cut, oldest first, and keeps a
// key taken again since.
func TestExpireIdempotencyKeys(t *testing.T) {
	s := mustOpen(t, memConfig())
	for i, k := range []string{"old", "again", "new"} {
		if _, _, err := s.AcceptIdempotent(pending(k, t0.Add(time.Duration(i)*time.Minute)), idem(k, "body")); err != nil {
			t.Fatal(err)
		}
	}
	// "again" expires and is taken again a day later.
	if _, replayed, err := s.AcceptIdempotent(pending("again-2", t0.Add(25*time.Hour)), idem("again", "body")); err != nil || replayed {
		t.Fatalf("retake: replayed %v, %v", replayed, err)
	}
	n, err := s.ExpireIdempotencyKeys(t0.Add(time.Hour), 100)
	if err != nil || n != 2 {
		t.Fatalf("expire: %d, %v; want 2 (old, new)", n, err)
	}
	// "again" still names again-2; "old" is free (a fresh request).
	if prior, replayed, _ := s.AcceptIdempotent(pending("x", t0.Add(26*time.Hour)), idem("again", "body")); !replayed || prior.ID != "again-2" {
		t.Errorf("again after expiry: %s replayed %v; want again-2", prior.ID, replayed)
	}
	if _, replayed, err := s.AcceptIdempotent(pending("old-2", t0.Add(2*time.Minute)), idem("old", "body")); err != nil || replayed {
		t.Errorf("old after expiry: replayed %v, %v; want a new request", replayed, err)
	}
	if n, err := s.ExpireIdempotencyKeys(t0.Add(30*time.Hour), 100); err != nil || n != 2 {
		t.Errorf("second expiry: %d, %v; want 2 (again, old)", n, err)
	}
}
