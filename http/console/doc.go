// Package console is the operators' console in the browser, served by the
// admin listener under /console/: an overview that refreshes itself, the
// sessions list and one session's page, and the actions an operator takes
// (redeliver one session or every failed one in a range, reload the ACL).
//
// Everything it serves is embedded (assets/): plain JavaScript and CSS
// files, no build chain, nothing fetched from elsewhere; every page carries
// a Content-Security-Policy that allows only this origin and no inline
// script or style.
//
// Access: with an admin token, a login form exchanges the token for a
// session cookie (a random id known only to this process, never the token;
// HttpOnly, SameSite=Strict, Secure over TLS; it expires after
// Config.SessionTTL and on logout). The cookie also lets the console read
// the admin API's GET endpoints (Console.AuthorizeRead, used by the admin
// listener's guard). Every POST the console answers needs the
// X-Requested-With header, which a cross-site form cannot send. Without an
// admin token (a loopback-only admin listener) the console is open, as the
// admin API is.
//
// The overview's history (sparklines) is a ring of samples of the metrics
// registry, taken every Config.SampleEvery and kept in memory only.
//
// The package knows the store and the engine only through the funcs in
// Config; it imports nothing from http/api.
package console
