package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"time"
)

// maxSessions bounds the logins kept; a new one past it ends the oldest.
const maxSessions = 1000

// sessions maps the SHA-256 of each session id (the cookie's value, 32
// random bytes) to its expiry. Only this process knows them: a restart logs
// every console out. The ids themselves are not kept, so the map is no
// list of live cookies.
type sessions struct {
	ttl time.Duration
	now func() time.Time

	mu struct {
		sync.Mutex
		m map[[sha256.Size]byte]time.Time
	}
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	s := &sessions{ttl: ttl, now: now}
	s.mu.m = make(map[[sha256.Size]byte]time.Time)
	return s
}

// create starts a session; it returns the cookie value and the name the
// action log uses for it.
func (s *sessions) create() (id, name string) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand's contract)
	id = base64.RawURLEncoding.EncodeToString(b[:])
	key := sha256.Sum256([]byte(id))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	if len(s.mu.m) >= maxSessions {
		var oldest [sha256.Size]byte
		var at time.Time
		for k, exp := range s.mu.m {
			if at.IsZero() || exp.Before(at) {
				oldest, at = k, exp
			}
		}
		delete(s.mu.m, oldest)
	}
	s.mu.m[key] = now.Add(s.ttl)
	return id, nameOf(key)
}

// valid reports whether id is a live session, and its name.
func (s *sessions) valid(id []byte) (string, bool) {
	key := sha256.Sum256(id)
	s.mu.Lock()
	exp, ok := s.mu.m[key]
	if ok && !s.now().Before(exp) {
		delete(s.mu.m, key)
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		return "", false
	}
	return nameOf(key), true
}

// end forgets a session (logout).
func (s *sessions) end(id []byte) (string, bool) {
	key := sha256.Sum256(id)
	s.mu.Lock()
	_, ok := s.mu.m[key]
	delete(s.mu.m, key)
	s.mu.Unlock()
	return nameOf(key), ok
}

func (s *sessions) pruneLocked(now time.Time) {
	for k, exp := range s.mu.m {
		if !now.Before(exp) {
			delete(s.mu.m, k)
		}
	}
}

// nameOf names a session in logs by a digest of its id: the same session
// has the same name on every line, and the name does not open the console.
func nameOf(key [sha256.Size]byte) string {
	return "console:" + hex.EncodeToString(key[:4])
}
