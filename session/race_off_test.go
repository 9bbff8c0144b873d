//go:build !race

package session

// raceEnabled skips allocation budgets: the race detector allocates.
const raceEnabled = false
