package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
)

// Peer is one node of the fleet, as --peers (and --peer-admin-urls) name it.
type Peer struct {
	// ID is the node's --node-id; its node number follows from it
	// (actors.NodeNumber).
	ID string
	// URL is the base URL of the node's public API, e.g.
	// http://chargeauth-1.chargeauth:8080.
	URL string
	// AdminURL is the base URL of the node's admin API. Default: URL's
	// host with the port of this node's own AdminListen (nodes of a fleet
	// usually listen on the same ports).
	AdminURL string
}

// ParsePeers reads --peers, "id=URL,id=URL,..." (spaces around items are
// ignored), and --peer-admin-urls, the same form for admin base URLs of
// some or all of those ids. Config.Validate checks the result further.
func ParsePeers(peers, adminURLs string) ([]Peer, error) {
	list, err := parseIDURLs("--peers", peers)
	if err != nil {
		return nil, err
	}
	admins, err := parseIDURLs("--peer-admin-urls", adminURLs)
	if err != nil {
		return nil, err
	}
	byID := map[string]int{}
	out := make([]Peer, len(list))
	for i, p := range list {
		if _, dup := byID[p[0]]; dup {
			return nil, fmt.Errorf("--peers: node id %q appears twice", p[0])
		}
		byID[p[0]] = i
		out[i] = Peer{ID: p[0], URL: p[1]}
	}
	for _, a := range admins {
		i, ok := byID[a[0]]
		if !ok {
			return nil, fmt.Errorf("--peer-admin-urls: node id %q is not in --peers", a[0])
		}
		out[i].AdminURL = a[1]
	}
	return out, nil
}

func parseIDURLs(flag, v string) ([][2]string, error) {
	var out [][2]string
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, u, ok := strings.Cut(item, "=")
		if !ok || id == "" || u == "" {
			return nil, fmt.Errorf("%s: %q is not id=URL", flag, item)
		}
		if err := checkBaseURL(u); err != nil {
			return nil, fmt.Errorf("%s: %s: %v", flag, id, err)
		}
		out = append(out, [2]string{id, strings.TrimSuffix(u, "/")})
	}
	return out, nil
}

func checkBaseURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", u)
	}
	if p.RawQuery != "" || p.Fragment != "" {
		return fmt.Errorf("%q: a base URL has no query or fragment", u)
	}
	return nil
}

// CheckFleet checks a node id and its peers and returns the node's number
// (see checkFleet).
func CheckFleet(nodeID string, peers []Peer) (uint16, error) {
	return checkFleet(nodeID, peers)
}

// checkFleet validates NodeID and Peers: the node's own id gives a node
// number; with peers, the node is one of them and no two of them share a
// node number (their ids would be indistinguishable).
func checkFleet(self string, peers []Peer) (uint16, error) {
	if self == "" && len(peers) == 0 {
		return 0, nil
	}
	node, err := actors.NodeNumber(self)
	if err != nil {
		return 0, fmt.Errorf("api: --node-id: %w", err)
	}
	if len(peers) == 0 {
		return node, nil
	}
	owner := map[uint16]string{}
	found := false
	for _, p := range peers {
		n, err := actors.NodeNumber(p.ID)
		if err != nil {
			return 0, fmt.Errorf("api: --peers: %w", err)
		}
		if other, dup := owner[n]; dup {
			return 0, fmt.Errorf("api: --peers: node ids %q and %q both have node number %d: give each node a distinct trailing number", other, p.ID, n)
		}
		owner[n] = p.ID
		found = found || p.ID == self
	}
	if !found {
		return 0, fmt.Errorf("api: --peers does not list this node's id %q (--node-id)", self)
	}
	return node, nil
}

// hopHeader marks a request forwarded by another node (its value: that
// node's id). A request carrying it is answered locally, never forwarded
// again: at most one hop.
const hopHeader = "X-Chargeauth-Forwarded-By"

// forwardTimeout bounds one forwarded request.
const forwardTimeout = 3 * time.Second

// ownerRetryAfter is the Retry-After, in seconds, of a 503 for an
// unreachable owner: about a balancer's health-check interval and a
// restart.
const ownerRetryAfter = 5

// forwarder sends a GET for an id this node does not own to the owner.
type forwarder struct {
	self   string
	node   uint16
	peers  map[uint16]Peer // without this node
	client *fasthttp.Client
}

func newForwarder(self string, node uint16, peers []Peer, adminListen string, lookup func(context.Context, string) ([]string, error)) *forwarder {
	f := &forwarder{self: self, node: node, peers: map[uint16]Peer{}}
	_, adminPort, _ := net.SplitHostPort(adminListen)
	for _, p := range peers {
		if p.ID == self {
			continue
		}
		if p.AdminURL == "" {
			u, _ := url.Parse(p.URL) // checked by ParsePeers
			p.AdminURL = u.Scheme + "://" + net.JoinHostPort(u.Hostname(), adminPort)
		}
		n, _ := actors.NodeNumber(p.ID) // checked by checkFleet
		f.peers[n] = p
	}
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	// Every new connection resolves the peer's name again: no address is
	// cached beyond the life of a connection, so a peer that moved (a
	// rescheduled pod) is found at its new address once the old
	// connection fails.
	dial := func(addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		defer cancel()
		ips, err := lookup(ctx, host)
		if err != nil {
			return nil, err
		}
		var d net.Dialer
		var errs []error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, errors.Join(errs...))
	}
	f.client = &fasthttp.Client{
		Name:                "chargeauth-forward",
		Dial:                dial,
		ReadTimeout:         forwardTimeout,
		WriteTimeout:        forwardTimeout,
		MaxIdleConnDuration: 30 * time.Second,
		MaxConnsPerHost:     256,
	}
	return f
}

// owner returns the peer that owns id, if that is another node this one
// knows.
func (f *forwarder) owner(id string) (Peer, bool) {
	if f == nil || len(f.peers) == 0 {
		return Peer{}, false
	}
	n, ok := actors.NodeOf(id)
	if !ok || n == f.node {
		return Peer{}, false
	}
	p, ok := f.peers[n]
	return p, ok
}

// forward answers ctx, a GET of an id this node does not hold, from the
// owner of the id at base(owner)+path. It returns false, leaving ctx alone,
// when the id is not another known node's or when ctx was forwarded
// already. An owner that does not answer is a 503 with Retry-After, never
// a 404: the id may well exist there.
func (f *forwarder) forward(ctx *fasthttp.RequestCtx, id, path string, admin bool) bool {
	if len(ctx.Request.Header.Peek(hopHeader)) > 0 {
		return false
	}
	p, ok := f.owner(id)
	if !ok {
		return false
	}
	base := p.URL
	if admin {
		base = p.AdminURL
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(base + path)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.Header.Set(hopHeader, f.self)
	if auth := ctx.Request.Header.Peek("Authorization"); admin && len(auth) > 0 {
		req.Header.SetBytesV("Authorization", auth)
	}
	if err := f.client.DoTimeout(req, resp, forwardTimeout); err != nil {
		writeOwnerUnreachable(ctx, p.ID)
		return true
	}
	ctx.SetStatusCode(resp.StatusCode())
	ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
	if ra := resp.Header.Peek("Retry-After"); len(ra) > 0 {
		ctx.Response.Header.SetBytesV("Retry-After", ra)
	}
	ctx.Response.Header.Set("X-Chargeauth-Node", p.ID)
	if !ctx.IsHead() {
		ctx.SetBody(resp.Body())
	}
	return true
}

// writeOwnerUnreachable is the 503 for an owner that did not answer.
func writeOwnerUnreachable(ctx *fasthttp.RequestCtx, owner string) {
	writeFailed(ctx, failOwnerUnreachable, nil)
	ctx.Response.Header.Set("X-Chargeauth-Node", owner)
}
