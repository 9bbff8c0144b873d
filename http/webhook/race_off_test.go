//go:build !race

package webhook

// raceEnabled skips allocation budgets: the race detector allocates.
const raceEnabled = false
