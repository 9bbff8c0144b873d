// Package webhook sends the decision callback over HTTP, following the
// Standard Webhooks specification (https://www.standardwebhooks.com/): the
// body, the webhook-id / webhook-timestamp / webhook-signature headers, the
// "v1," HMAC-SHA256 signatures (one per secret, for rotation), and the guard
// that refuses loopback, private, link-local and other internal destinations.
//
// One Send is one attempt. Retries, backoff, persistence of attempts and the
// dead letter belong to the caller (the callback sender actor): this package
// knows nothing about actors or the store, and imports only session from this
// module.
//
// The SSRF guard runs at dial time, after DNS resolution: the dialer resolves
// the host itself, drops every address the policy forbids, and connects only
// to an address it checked (a net.Dialer Control function checks it again,
// just before connect). A DNS answer that changes between a check and the
// connect (rebinding) therefore cannot reach an internal address. Redirects
// are never followed.
//
// Driver tokens are never logged in full (session.MaskToken).
package webhook
