package schedule

import (
	"testing"
	"time"
)

// BenchmarkNext measures the schedule's answer after a failed attempt, as
// the callback sender asks it once per attempt.
func BenchmarkNext(b *testing.B) {
	p := Policy{Delays: Default, MaxAge: 72 * time.Hour}
	o := Outcome{StatusCode: 503}
	b.ReportAllocs()
	for b.Loop() {
		if n := p.Next(t0, 3, o, t0.Add(time.Minute), 0.5); n.Verdict != Retry {
			b.Fatalf("verdict %v", n.Verdict)
		}
	}
}
