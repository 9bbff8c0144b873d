package persistence

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/session"
)

// BenchmarkTransitions measures one request's whole life in the store on
// a real disk: Accept (synced), Decide (synced) and the delivered
// callback's RecordAttempt (not synced), as the front, the request actor
// and the callback sender make them. Goroutines run in parallel, as the
// pipeline does, so that their fsyncs are shared.
//
//	go test -run xxx -bench 'Transitions|ScanDue' -benchmem ./persistence/
func BenchmarkTransitions(b *testing.B) {
	s := mustOpen(b, Config{Dir: filepath.Join(b.TempDir(), "db"), Logger: quietLogger()})
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("%016x", seq.Add(1))
			if err := s.Accept(pending(id, t0)); err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Decide(id, session.StatusAllowed, "", session.ByAuthz, t0); err != nil {
				b.Error(err)
				return
			}
			a := Attempt{At: t0, Outcome: session.StateDelivered, StatusCode: 204, Took: time.Millisecond}
			if _, err := s.RecordAttempt(id, a); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkScanDue measures reading due callbacks from the index: 1000
// decided records, all due, read in full by ScanDue.
func BenchmarkScanDue(b *testing.B) {
	s := mustOpen(b, memConfig())
	for i := range 1000 {
		id := testID(0, i)
		mustAccept(b, s, id)
		if _, err := s.Decide(id, session.StatusAllowed, "", session.ByAuthz, t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		if _, err := s.ScanDue(DuePos{}, t0.Add(time.Hour), 0, func(DuePos, session.Record) bool { n++; return true }); err != nil {
			b.Fatal(err)
		}
		if n != 1000 {
			b.Fatalf("scanned %d, want 1000", n)
		}
	}
}
