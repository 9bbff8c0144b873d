// Package testwait is the one polling helper of the tree's tests: a test
// waits for a condition, never for a fixed time (nats' checkFor). It knows
// nothing of chargeauth; any _test.go file may import it.
package testwait
