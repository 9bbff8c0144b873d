package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"time"
)

const (
	burstSampleEvery = 100 * time.Millisecond
	burstPrintEvery  = 5 * time.Second
)

// burstPeaks are the highest figures the sampler saw.
type burstPeaks struct {
	heapAlloc, heapInuse, heapLive, rss uint64
	heapAt                              float64 // s since the load began
	rssSource                           string
	profile                             string // heap profile written, if any
}

// burstSampler samples memory, the service's backlog and live request
// actors, and the tracker's counts every 100ms; it prints a summary line
// every 5s and, if asked, writes a heap profile near the heap's peak.
type burstSampler struct {
	start       time.Time
	tr          *burstTracker
	eng         engineGauges
	out         io.Writer
	profilePath string

	stop, done chan struct{}
	hwmOK      bool
	series     []BurstSample
	peaks      burstPeaks

	profiledHeap uint64
	profiledAt   time.Time
	profileErr   error
}

// engineGauges is what the sampler reads of the service's engine
// (*actors.Engine).
type engineGauges interface {
	Backlog() int64
	LiveRequests() int64
	AuthzCallsInFlight() int64
	CallbacksPending() int64
}

func startBurstSampler(start time.Time, tr *burstTracker, eng engineGauges, out io.Writer, profilePath string) *burstSampler {
	s := &burstSampler{start: start, tr: tr, eng: eng, out: out, profilePath: profilePath,
		stop: make(chan struct{}), done: make(chan struct{})}
	// Reset VmHWM (Linux 4.0+), so that the peak RSS is this run's.
	s.hwmOK = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	s.sample(start)
	go s.loop()
	return s
}

func (s *burstSampler) loop() {
	defer close(s.done)
	t := time.NewTicker(burstSampleEvery)
	defer t.Stop()
	lastPrint := s.start
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			smp := s.sample(now)
			if now.Sub(lastPrint) >= burstPrintEvery {
				lastPrint = now
				s.print(smp)
			}
		}
	}
}

func (s *burstSampler) sample(now time.Time) BurstSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := procStatus("VmRSS:")
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	smp := BurstSample{
		T:         round3(now.Sub(s.start).Seconds()),
		HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, RSS: rss,
		Backlog: s.eng.Backlog(), Live: s.eng.LiveRequests(),
		AuthzCalls: s.eng.AuthzCallsInFlight(), CallbacksPending: s.eng.CallbacksPending(),
		Acked: s.tr.acked.Load(), Callbacks: s.tr.firstCBs.Load(),
	}
	s.series = append(s.series, smp)
	if smp.HeapAlloc > s.peaks.heapAlloc {
		s.peaks.heapAlloc, s.peaks.heapAt = smp.HeapAlloc, smp.T
		s.maybeProfile(now, smp.HeapAlloc)
	}
	if live[0].Value.Kind() == metrics.KindUint64 {
		smp.HeapLive = live[0].Value.Uint64()
		s.series[len(s.series)-1].HeapLive = smp.HeapLive
	}
	s.peaks.heapInuse = max(s.peaks.heapInuse, smp.HeapInuse)
	s.peaks.heapLive = max(s.peaks.heapLive, smp.HeapLive)
	s.peaks.rss = max(s.peaks.rss, rss)
	return smp
}

// maybeProfile writes the heap profile at a new peak at least 5% above the
// last one written, at most every 2s.
func (s *burstSampler) maybeProfile(now time.Time, heap uint64) {
	if s.profilePath == "" || s.profileErr != nil {
		return
	}
	if heap < s.profiledHeap+s.profiledHeap/20 || now.Sub(s.profiledAt) < 2*time.Second {
		return
	}
	tmp := s.profilePath + ".tmp"
	f, err := os.Create(tmp)
	if err == nil {
		err = pprof.WriteHeapProfile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, s.profilePath)
	}
	if err != nil {
		s.profileErr = err
		fmt.Fprintf(s.out, "heap profile: %v\n", err)
		return
	}
	s.profiledHeap, s.profiledAt = heap, now
	s.peaks.profile = fmt.Sprintf("%s (written at t=%.1fs, HeapAlloc %s MiB)", s.profilePath, now.Sub(s.start).Seconds(), mib(heap))
}

func (s *burstSampler) print(smp BurstSample) {
	fmt.Fprintf(s.out, "t=%7.1fs 202s=%d callbacks=%d owed=%d backlog=%d live=%d authz=%d cb_pending=%d heap=%sMiB live_heap=%sMiB rss=%sMiB\n",
		smp.T, smp.Acked, smp.Callbacks, smp.Acked-smp.Callbacks, smp.Backlog, smp.Live, smp.AuthzCalls, smp.CallbacksPending,
		mib(smp.HeapAlloc), mib(smp.HeapLive), mib(smp.RSS))
}

// Stop ends the sampling (after one last sample) and returns the series
// and the peaks.
func (s *burstSampler) Stop() ([]BurstSample, burstPeaks) {
	close(s.stop)
	<-s.done
	smp := s.sample(time.Now())
	s.print(smp)
	p := s.peaks
	p.rssSource = "VmRSS sampled every 100ms"
	if hwm, ok := procStatus("VmHWM:"); ok && s.hwmOK {
		p.rss = max(hwm, p.rss)
		p.rssSource = "VmHWM (reset before the load)"
	}
	return s.series, p
}
