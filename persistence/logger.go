package persistence

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleLogger is pebble.Logger on slog.
type pebbleLogger struct{ l *slog.Logger }

var _ pebble.Logger = pebbleLogger{}

func (p pebbleLogger) Infof(format string, args ...any) { p.l.Info(fmt.Sprintf(format, args...)) }

func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Error(fmt.Sprintf(format, args...)) }

// Fatalf logs at Error and panics: Pebble's contract is that Fatalf does not
// return (it calls it on a failed commit, with the commit pipeline in a state
// it cannot continue from). The default logger would os.Exit instead; a panic
// at least runs deferred unlocks and shows a stack.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "fatal", true)
	panic(fatalPanic(msg))
}

// fatalPanic is what Fatalf panics with. Store.commit recovers it: a failed
// commit becomes ErrUnavailable and a reopen, not a crash. Anywhere else (a
// background flush or compaction) it ends the process, as Pebble's default
// logger would, and the next start resumes from what was synced.
type fatalPanic string

// eventListener sends the Pebble events an operator acts on to l. The other
// events are left to Pebble's no-op defaults.
func eventListener(l *slog.Logger) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			l.Error("pebble background error", "err", err)
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			l.Error("pebble data corruption", "info", info.String())
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			l.Warn("pebble disk slow", "path", info.Path, "op", info.OpType.String(), "duration", info.Duration, "info", info.String())
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			l.Warn("pebble low disk space", "avail_bytes", info.AvailBytes, "total_bytes", info.TotalBytes, "threshold_percent", info.PercentThreshold)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			l.Warn("pebble write stall begin", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			l.Info("pebble write stall end")
		},
	}
}
