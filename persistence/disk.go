package persistence

import (
	"fmt"
	"sync/atomic"
	"time"
)

// diskFloor is Config.MinFreeDisk: a cached reading of the free space under
// Config.Dir, so that Accept does not make a statfs call per request. The
// reading is refreshed by whichever Accept first finds it older than
// Config.diskCheckEvery; the others use the previous one meanwhile.
type diskFloor struct {
	s *Store
	// checkedAt is the cfg.now() of the last reading, in unix nanoseconds.
	checkedAt atomic.Int64
	// avail is the last reading's AvailBytes; valid only if known.
	avail atomic.Uint64
	// known is false while the FS cannot report its usage: no floor then.
	known atomic.Bool
	// warned is set once the "cannot read disk usage" warning is logged.
	warned atomic.Bool
}

func (d *diskFloor) init(s *Store) {
	d.s = s
	if s.cfg.MinFreeDisk > 0 {
		d.checkedAt.Store(s.cfg.now().UnixNano())
		d.refresh()
	}
}

// refresh reads the disk usage now.
func (d *diskFloor) refresh() {
	cfg := &d.s.cfg
	u, err := cfg.FS.GetDiskUsage(cfg.Dir)
	if err != nil {
		d.known.Store(false)
		if !d.warned.Swap(true) {
			d.s.log.Warn("free-space floor off: cannot read disk usage",
				"dir", cfg.Dir, "min_free_disk", cfg.MinFreeDisk, "err", err)
		}
		return
	}
	d.avail.Store(u.AvailBytes)
	d.known.Store(true)
}

// check returns an error wrapping ErrDiskFull if the free space is below the
// floor.
func (d *diskFloor) check() error {
	cfg := &d.s.cfg
	if cfg.MinFreeDisk == 0 {
		return nil
	}
	now := cfg.now().UnixNano()
	last := d.checkedAt.Load()
	if age := time.Duration(now - last); (cfg.diskCheckEvery < 0 || age >= cfg.diskCheckEvery || age < 0) &&
		d.checkedAt.CompareAndSwap(last, now) {
		d.refresh()
	}
	if !d.known.Load() {
		return nil
	}
	if avail := d.avail.Load(); avail < cfg.MinFreeDisk {
		return fmt.Errorf("%w: %d bytes available in %s, floor %d", ErrDiskFull, avail, cfg.Dir, cfg.MinFreeDisk)
	}
	return nil
}
