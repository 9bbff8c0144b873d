package main

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// MemoryReport is the process's peak memory during one workload. The service,
// the load generator and the callback sink share the process, so it counts
// all three.
type MemoryReport struct {
	// PeakHeapBytes is the highest runtime.MemStats.HeapAlloc sampled (every
	// 100ms).
	PeakHeapBytes uint64 `json:"peak_heap_bytes"`
	// PeakRSSBytes is VmHWM, reset before the workload, or, where it cannot
	// be reset, the highest VmRSS sampled.
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	RSSSource    string `json:"rss_source"`
	// CPUSeconds is the process's user and system CPU time from the start
	// of the load to the end of the drain: the most stable figure on a
	// shared machine, where throughput swings with the neighbours.
	CPUSeconds float64 `json:"cpu_seconds"`
	Note       string  `json:"note"`
}

const memNote = "in-process: includes the load generator (and, for chargeauth, the authz server and callback sink)"

// memSampler samples the heap and RSS every 100ms until Stop.
type memSampler struct {
	stop     chan struct{}
	done     chan struct{}
	hwmOK    bool
	peakHeap uint64
	peakRSS  uint64
	cpu0     time.Duration
}

// startMemSampler collects garbage left by earlier work, resets the peak RSS
// (writing 5 to /proc/self/clear_refs, Linux 4.0+) and starts sampling.
func startMemSampler() *memSampler {
	runtime.GC()
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	m.hwmOK = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	m.sample()
	m.cpu0 = cpuTime()
	go func() {
		defer close(m.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *memSampler) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.peakHeap = max(m.peakHeap, ms.HeapAlloc)
	if rss, ok := procStatus("VmRSS:"); ok {
		m.peakRSS = max(m.peakRSS, rss)
	}
}

// Stop ends the sampling and returns the peaks.
func (m *memSampler) Stop() MemoryReport {
	close(m.stop)
	<-m.done
	m.sample()
	r := MemoryReport{PeakHeapBytes: m.peakHeap, PeakRSSBytes: m.peakRSS, RSSSource: "VmRSS sampled every 100ms",
		CPUSeconds: (cpuTime() - m.cpu0).Seconds(), Note: memNote}
	if hwm, ok := procStatus("VmHWM:"); ok && m.hwmOK {
		r.PeakRSSBytes = max(hwm, m.peakRSS)
		r.RSSSource = "VmHWM (reset before the workload)"
	}
	return r
}

// procStatus reads one "kB" field of /proc/self/status, in bytes.
func procStatus(field string) (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return statusField(b, field)
}

// statusField parses one "kB" field of a /proc/<pid>/status, in bytes.
func statusField(b []byte, field string) (uint64, bool) {
	i := bytes.Index(b, []byte(field))
	if i < 0 {
		return 0, false
	}
	line := b[i+len(field):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	line = bytes.TrimSuffix(bytes.TrimSpace(line), []byte("kB"))
	kb, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 10, 64)
	if err != nil {
		return 0, false
	}
	return kb << 10, true
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
