package node

import (
	"runtime"
	"testing"
)

func TestScaleGOMAXPROCS(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })

	t.Setenv("GOMAXPROCS", "")
	if got := ScaleGOMAXPROCS(); got != 2*before || runtime.GOMAXPROCS(0) != 2*before {
		t.Errorf("unset: ScaleGOMAXPROCS() = %d, GOMAXPROCS %d; want %d", got, runtime.GOMAXPROCS(0), 2*before)
	}

	runtime.GOMAXPROCS(before)
	t.Setenv("GOMAXPROCS", "3") // read by the runtime at start only: here it only says "the operator chose"
	if got := ScaleGOMAXPROCS(); got != before || runtime.GOMAXPROCS(0) != before {
		t.Errorf("set: ScaleGOMAXPROCS() = %d, GOMAXPROCS %d; want it left at %d", got, runtime.GOMAXPROCS(0), before)
	}
}

// SysmonGODEBUG's value is one the runtime takes (it parses a 32-bit
// integer and ignores anything else) and turns schedtrace on; SysmonAwake
// reads GODEBUG as the runtime does.
func TestSysmonAwake(t *testing.T) {
	t.Setenv("GODEBUG", SysmonGODEBUG)
	if !SysmonAwake() {
		t.Fatalf("SysmonAwake() = false with GODEBUG=%s: a value the runtime would ignore or treat as off", SysmonGODEBUG)
	}
	for godebug, want := range map[string]bool{
		"":                               false,
		"madvdontneed=1":                 false,
		"schedtrace=0":                   false,
		"schedtrace=-1":                  false,
		"schedtrace=abc":                 false,
		"schedtrace=4294967295":          false, // not a 32-bit integer: ignored
		"schedtrace=1":                   true,
		"madvdontneed=1,schedtrace=1000": true,
		"schedtrace=1000,schedtrace=0":   false, // the last one wins
		"schedtrace=0," + SysmonGODEBUG:  true,
		" schedtrace=1":                  false, // the runtime does not trim either
	} {
		t.Setenv("GODEBUG", godebug)
		if got := SysmonAwake(); got != want {
			t.Errorf("GODEBUG=%q: SysmonAwake() = %v, want %v", godebug, got, want)
		}
	}
}
