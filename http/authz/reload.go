package authz

import (
	"bytes"
	"os"
	"time"

	"github.com/chargeauth/chargeauth/acl"
)

// Reload loads the ACL file at path and swaps it in atomically: a request
// sees the old list or the new one, never a mix. An invalid file keeps the
// old list; the error says why (and is logged).
func (s *Server) Reload(path string) error {
	a, err := acl.Load(path)
	if err != nil {
		s.stats.failures.Add(1)
		s.log.Error("ACL reload failed; keeping the loaded ACL", "path", path, "err", err,
			"acl_version", s.acl.Load().Version())
		return err
	}
	s.stats.loaded(time.Now()) // a successful reload, even of the same content
	s.SetACL(a)
	return nil
}

// Watch reloads the ACL file at path whenever its size, modification time
// or content hash changes, checking every interval, until stop is closed.
// It polls rather than using inotify so that it also sees a file replaced
// by a rename (as editors and config management do) or on a network
// filesystem.
//
// The first check always reads the file: a change made after the loaded
// ACL was read and before Watch runs (it is started on a goroutine of its
// own) is not missed; an unchanged file is then a debug line (SetACL).
func (s *Server) Watch(path string, every time.Duration, stop <-chan struct{}) {
	var last stamp // none yet: the first check reloads
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		cur := fileStamp(path)
		if cur.equal(last) {
			continue
		}
		last = cur
		_ = s.Reload(path) // logged; the old ACL stays on error
	}
}

type stamp struct {
	size    int64
	modTime time.Time
	head    []byte // the first 4 KiB, to catch a same-second same-size rewrite
	err     bool
}

func (a stamp) equal(b stamp) bool {
	return a.size == b.size && a.modTime.Equal(b.modTime) && a.err == b.err && bytes.Equal(a.head, b.head)
}

func fileStamp(path string) stamp {
	f, err := os.Open(path)
	if err != nil {
		return stamp{err: true}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return stamp{err: true}
	}
	head := make([]byte, 4096)
	n, _ := f.Read(head)
	return stamp{size: fi.Size(), modTime: fi.ModTime(), head: head[:n]}
}
