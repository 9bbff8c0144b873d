// Package session is chargeauth's domain: the charging-session request a
// charge point sends, its validation, the decision made about it and the
// record that follows it through its states
//
//	pending -> decided -> delivered | failed
//
// It does no I/O and imports nothing from actors, http or persistence, so
// every other package can share these types without seeing each other.
package session
