package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTimelineBuckets(t *testing.T) {
	if got := tlIndex(uint64(tlMaxLatency / time.Microsecond)); got >= tlBuckets {
		t.Fatalf("tlIndex(max) = %d, want < %d", got, tlBuckets)
	}
	for _, us := range []uint64{0, 1, 63, 64, 65, 100, 1000, 12345, 999_999, 60_000_000, uint64(tlMaxLatency / time.Microsecond)} {
		i := tlIndex(us)
		if hi := tlHigh(i); hi < int64(us) || (i > 0 && tlHigh(i-1) >= int64(us)) {
			t.Errorf("us %d: bucket %d ends at %d, the one before at %d", us, i, hi, tlHigh(i-1))
		}
		if lo := tlHigh(i-1) + 1; us >= 2*tlSub && float64(tlHigh(i)-lo+1)/float64(lo) > 1.0/tlSub {
			t.Errorf("us %d: bucket [%d, %d] wider than 1/%d", us, lo, tlHigh(i), tlSub)
		}
	}
}

func TestTimelinePoints(t *testing.T) {
	start := time.Now()
	tl := newTimeline(start)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	for i := range 100 { // second 0: 1ms..100ms
		tl.ack(at(100*time.Millisecond), time.Duration(i+1)*time.Millisecond)
	}
	tl.ack(at(2500*time.Millisecond), 2*time.Hour) // clamped
	tl.callback(at(3100 * time.Millisecond))
	tl.callback(at(3200 * time.Millisecond))
	tl.e2e(at(3200*time.Millisecond), 40*time.Millisecond)

	pts := tl.points(true)
	if len(pts) != 4 {
		t.Fatalf("%d points, want 4: %+v", len(pts), pts)
	}
	p := pts[0]
	if p.T != 1 || p.Acked != 100 || p.AckMax != 100 || p.AckP50 < 50 || p.AckP50 > 50*1.04 || p.AckP99 < 99 || p.AckP99 > 100 {
		t.Errorf("second 1: %+v", p)
	}
	if p := pts[1]; p.T != 2 || p.Acked != 0 || p.AckP50 != 0 || p.Callbacks != 0 {
		t.Errorf("second 2 (empty): %+v %+v", p, *p.CallbackPoint)
	}
	if p := pts[2]; p.Acked != 1 || p.AckMax != float64(tlMaxLatency/time.Millisecond) {
		t.Errorf("second 3: %+v", p)
	}
	if cb := pts[3].CallbackPoint; cb.Callbacks != 2 || cb.E2ECount != 1 || cb.E2EP50 < 40 || cb.E2EP50 > 40*1.04 || cb.E2EMax != 40 {
		t.Errorf("second 4 callbacks: %+v", *cb)
	}
	if pts := tl.points(false); pts[0].CallbackPoint != nil {
		t.Errorf("points(false) has callbacks: %+v", pts[0])
	}
	if pts := newTimeline(start).points(true); len(pts) != 0 {
		t.Errorf("empty timeline: %+v", pts)
	}
	late := newTimeline(start)
	late.ack(at(10*time.Hour), time.Millisecond) // past the last second: counted in it
	if pts := late.points(false); len(pts) != tlMaxSeconds || pts[tlMaxSeconds-1].Acked != 1 {
		t.Errorf("late ack: %d points", len(pts))
	}
}

// TestWriteChart draws a synthetic run, including a workload with no
// callbacks and seconds with no 202.
func TestWriteChart(t *testing.T) {
	var ceiling, chargeauth []TimelinePoint
	for s := 1; s <= 6; s++ {
		ceiling = append(ceiling, TimelinePoint{T: s, Acked: 60000, AckP50: 0.8, AckP99: 3, AckMax: 9})
		p := TimelinePoint{T: s, CallbackPoint: &CallbackPoint{Callbacks: 5000, E2ECount: 5000, E2EP50: 4, E2EP99: 30, E2EMax: 80}}
		if s <= 5 {
			p.Acked, p.AckP50, p.AckP99, p.AckMax = 5000, 10, 40, 120
		}
		chargeauth = append(chargeauth, p)
	}
	path := filepath.Join(t.TempDir(), "out", "report.png")
	if p := os.Getenv("CHART_OUT"); p != "" {
		path = p
	}
	err := writeChart(path, "test run", []chartWorkload{
		{Name: "ceiling", Timeline: ceiling, LoadEndS: 5.01, Color: ceilingColor},
		{Name: "chargeauth", Timeline: chargeauth, LoadEndS: 5.02, Color: chargeauthColor},
	})
	if err != nil {
		t.Fatal(err)
	}
	mustBePNG(t, path)
	if os.Getenv("CHART_OUT") != "" {
		return
	}
	// No data at all: still a chart.
	if err := writeChart(path, "empty", []chartWorkload{{Name: "x", Color: ceilingColor}}); err != nil {
		t.Fatal(err)
	}
	mustBePNG(t, path)
}

func TestChartPath(t *testing.T) {
	for in, want := range map[string]string{"bench/out/report.json": "bench/out/report.png", "r": "r.png", "a.b/r.out": "a.b/r.png"} {
		if got := chartPath(in); got != want {
			t.Errorf("chartPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// mustBePNG checks that path decodes as a PNG chartWidthPx wide.
func mustBePNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != chartWidthPx || b.Dy() < chartWidthPx/2 {
		t.Errorf("%s: %dx%d pixels, want %d wide", path, b.Dx(), b.Dy(), chartWidthPx)
	}
}

// mustHaveTimeline checks that r's timeline counts every 202 and, if
// callbacks is set, at least the callbacks reported (late duplicates may
// add to it).
func mustHaveTimeline(t *testing.T, name string, tl []TimelinePoint, accepted, callbacks int64) {
	t.Helper()
	if len(tl) == 0 {
		t.Fatalf("%s: empty timeline", name)
	}
	var acked, cbs int64
	for i, p := range tl {
		if p.T != i+1 {
			t.Fatalf("%s: point %d has t=%d", name, i, p.T)
		}
		acked += p.Acked
		if p.Acked > 0 && (p.AckP50 <= 0 || p.AckP99 < p.AckP50 || p.AckMax < p.AckP99) {
			t.Errorf("%s: t=%d: ack latencies %+v", name, p.T, p)
		}
		if p.CallbackPoint != nil {
			cbs += p.Callbacks
			if p.E2ECount > 0 && (p.E2EP50 <= 0 || p.E2EP99 < p.E2EP50 || p.E2EMax < p.E2EP99) {
				t.Errorf("%s: t=%d: e2e latencies %+v", name, p.T, *p.CallbackPoint)
			}
		}
	}
	if acked != accepted {
		t.Errorf("%s: timeline has %d 202s, report %d", name, acked, accepted)
	}
	if cbs < callbacks {
		t.Errorf("%s: timeline has %d callbacks, report %d", name, cbs, callbacks)
	}
}

// BenchmarkRecordAck compares what the load generator's hot path spends per
// 202 on the shared HdrHistogram and on the timeline, from parallel workers.
func BenchmarkRecordAck(b *testing.B) {
	b.Run("kind=hdr", func(b *testing.B) {
		h := newHistogram()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.Record(300 * time.Microsecond)
			}
		})
	})
	b.Run("kind=timeline", func(b *testing.B) {
		tl := newTimeline(time.Now())
		at := tl.start.Add(time.Second) // the load generator has the time already
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tl.ack(at, 300*time.Microsecond)
			}
		})
	})
}

func TestSecondTicks(t *testing.T) {
	for _, hi := range []float64{1, 7, 66, 2000, 30000} {
		var labels int
		for _, tk := range secondTicks(0, hi) {
			if tk.Label != "" {
				labels++
			}
			if tk.Value < 0 || tk.Value > hi {
				t.Errorf("hi %g: tick at %g", hi, tk.Value)
			}
		}
		if labels < 2 || labels > 21 {
			t.Errorf("hi %g: %d labels", hi, labels)
		}
	}
}
