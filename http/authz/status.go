package authz

import (
	"sync/atomic"
	"time"
)

// ACLStatus is what an operator watches about the loaded ACL (the admin
// /metrics endpoint shows it).
type ACLStatus struct {
	// Version is the loaded ACL's version (acl.ACL.Version).
	Version string
	// Entries is the number of entries in the loaded ACL.
	Entries int
	// LoadedAt is when the ACL was last loaded successfully: at NewServer,
	// then at every Reload or SetACL that succeeded.
	LoadedAt time.Time
	// ReloadFailures counts the Reloads that failed (and kept the old ACL).
	ReloadFailures uint64
}

// aclStats backs ACLStatus; its zero value is ready to use.
type aclStats struct {
	loadedAt atomic.Int64 // unix nanoseconds
	failures atomic.Uint64
}

func (a *aclStats) loaded(at time.Time) { a.loadedAt.Store(at.UnixNano()) }

// ACLStatus reports the loaded ACL's version and size, when it was last
// loaded and how many reloads failed. It is safe for concurrent use.
func (s *Server) ACLStatus() ACLStatus {
	a := s.acl.Load()
	return ACLStatus{
		Version:        a.Version(),
		Entries:        a.Len(),
		LoadedAt:       time.Unix(0, s.stats.loadedAt.Load()),
		ReloadFailures: s.stats.failures.Load(),
	}
}
