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
