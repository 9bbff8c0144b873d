package api_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/node"
)

// twoNodes starts chargeauth-1 and chargeauth-2 as a fleet of two.
// lookup, if set, resolves peer names (the peers are then named
// "node-N.test"). The ports are reserved before the nodes start (--peers
// names them): a port another test took meanwhile is tried again.
func twoNodes(t *testing.T, lookup func(context.Context, string) ([]string, error)) (a, b *node.Node) {
	t.Helper()
	authz := startFakeAuthz(t, 0)
	for attempt := 0; ; attempt++ {
		a, b, err := tryTwoNodes(authz.URL, lookup)
		if err == nil {
			t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
			return a, b
		}
		if !errors.Is(err, node.ErrListen) || attempt == 4 {
			t.Fatal(err)
		}
	}
}

func tryTwoNodes(authzURL string, lookup func(context.Context, string) ([]string, error)) (a, b *node.Node, err error) {
	var addrs [4]string
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	pubA, admA, pubB, admB := addrs[0], addrs[1], addrs[2], addrs[3]
	host := func(addr, name string) string {
		if lookup == nil {
			return addr
		}
		_, port, _ := net.SplitHostPort(addr)
		return name + ":" + port
	}
	peers := "chargeauth-1=http://" + host(pubA, "node-1.test") + ", chargeauth-2=http://" + host(pubB, "node-2.test")
	peerAdmins := "chargeauth-1=http://" + host(admA, "node-1.test") + ",chargeauth-2=http://" + host(admB, "node-2.test")
	cfg := func(id, pub, adm string) node.Config {
		c := node.Config{Listen: pub, AdminListen: adm, AuthzURL: authzURL, NodeID: id, Peers: peers, PeerAdminURLs: peerAdmins,
			AllowPrivateCallbacks: true, FS: vfs.NewMem(), DataDir: "data", ShutdownGrace: time.Second,
			Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
		c.LookupHost = lookup
		return c.WithDefaults()
	}
	if a, err = node.Start(cfg("chargeauth-1", pubA, admA)); err != nil {
		return nil, nil, err
	}
	if b, err = node.Start(cfg("chargeauth-2", pubB, admB)); err != nil {
		_ = a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

func getWithHeader(t *testing.T, url, name, value string) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.Set(name, value)
	if err := fasthttp.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for _, k := range resp.Header.PeekKeys() {
		h[strings.ToLower(string(k))] = string(resp.Header.PeekBytes(k))
	}
	return response{code: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: h}
}

// A GET that reaches a node not owning the id is answered by the owner,
// on the public and the admin API alike; a forwarded GET is not forwarded
// again; an id the owner does not know is a 404.
func TestGetForwardsToOwner(t *testing.T) {
	a, b := twoNodes(t, nil)
	recv := startReceiver(t)
	id := mustAccept(t, b, tokAllowed, recv.URL+"/cb")
	if n, _ := actors.NodeOf(id); n != 2 {
		t.Fatalf("chargeauth-2 accepted %s, carrying node %d", id, n)
	}
	eventually(t, 5e9, 1e7, func() error {
		if len(recv.byID(id)) == 0 {
			return errNoCallback
		}
		return nil
	})

	atOwner := do(t, "GET", "http://"+b.Addr()+"/charge_point/session/"+id, "", nil)
	viaA := do(t, "GET", "http://"+a.Addr()+"/charge_point/session/"+id, "", nil)
	if viaA.code != 200 || string(viaA.body) != string(atOwner.body) {
		t.Fatalf("GET via chargeauth-1: %d %s; at the owner: %d %s", viaA.code, viaA.body, atOwner.code, atOwner.body)
	}
	if viaA.header["x-chargeauth-node"] != "chargeauth-2" || !strings.HasPrefix(viaA.header["content-type"], "application/json") {
		t.Errorf("forwarded answer headers: %v", viaA.header)
	}

	adm := do(t, "GET", "http://"+a.AdminAddr()+"/sessions/"+id, "", nil)
	if adm.code != 200 || adm.json(t)["transitions"] == nil || adm.json(t)["request_id"] != id {
		t.Fatalf("admin GET via chargeauth-1: %d %s", adm.code, adm.body)
	}

	// One hop at most: a request already forwarded is answered locally.
	hop := getWithHeader(t, "http://"+a.Addr()+"/charge_point/session/"+id, "X-Chargeauth-Forwarded-By", "chargeauth-2")
	if hop.code != 404 {
		t.Errorf("forwarded GET at a non-owner: %d %s, want 404", hop.code, hop.body)
	}

	// An id of node 2 that node 2 does not have.
	unknown, _ := actors.NewID(2)
	if r := do(t, "GET", "http://"+a.Addr()+"/charge_point/session/"+unknown, "", nil); r.code != 404 {
		t.Errorf("unknown id of chargeauth-2 via chargeauth-1: %d %s, want 404", r.code, r.body)
	}
	// An id of a node the fleet does not have: 404 at once.
	stray, _ := actors.NewID(9)
	if r := do(t, "GET", "http://"+a.Addr()+"/charge_point/session/"+stray, "", nil); r.code != 404 {
		t.Errorf("id of node 9: %d %s, want 404", r.code, r.body)
	}
}

// An owner that does not answer is a 503 with Retry-After, never a 404.
func TestGetOwnerDownIs503(t *testing.T) {
	a, b := twoNodes(t, nil)
	id := mustAccept(t, b, tokAllowed, "http://127.0.0.1:1/cb")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{"http://" + a.Addr() + "/charge_point/session/" + id, "http://" + a.AdminAddr() + "/sessions/" + id} {
		r := do(t, "GET", url, "", nil)
		if r.code != 503 || r.header["retry-after"] == "" || r.json(t)["status"] != "failed" {
			t.Errorf("GET %s with the owner down: %d %v %s, want 503 with Retry-After", url, r.code, r.header, r.body)
		}
	}
}

// Peer names are resolved on every new connection: a name that did not
// resolve (a pod not yet in DNS) is looked up again on the next GET.
func TestForwardResolvesNamesAgain(t *testing.T) {
	var fail atomic.Bool
	var lookups atomic.Int64
	fail.Store(true)
	lookup := func(ctx context.Context, host string) ([]string, error) {
		lookups.Add(1)
		if !strings.HasSuffix(host, ".test") {
			return nil, errors.New("unexpected host " + host)
		}
		if fail.Load() {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return []string{"127.0.0.1"}, nil
	}
	a, b := twoNodes(t, lookup)
	id := mustAccept(t, b, tokAllowed, "http://127.0.0.1:1/cb")
	url := "http://" + a.Addr() + "/charge_point/session/" + id
	if r := do(t, "GET", url, "", nil); r.code != 503 {
		t.Fatalf("GET while the owner's name does not resolve: %d %s, want 503", r.code, r.body)
	}
	fail.Store(false)
	if r := do(t, "GET", url, "", nil); r.code != 200 {
		t.Fatalf("GET once the name resolves: %d %s, want 200", r.code, r.body)
	}
	if lookups.Load() < 2 {
		t.Errorf("%d lookups, want one per attempt", lookups.Load())
	}
}

func TestFleetConfig(t *testing.T) {
	for _, tc := range []struct {
		name, self, peers, admins, want string
	}{
		{"shared number", "a-2", "a-2=http://a:8080,b-2=http://b:8080", "", "both have node number 2"},
		{"self missing", "c-3", "a-1=http://a:8080,b-2=http://b:8080", "", "does not list this node"},
		{"not id=URL", "a-1", "a-1", "", "not id=URL"},
		{"bad URL", "a-1", "a-1=ftp://a", "", "http(s) URL"},
		{"duplicate id", "a-1", "a-1=http://a,a-1=http://b", "", "twice"},
		{"admin of a stranger", "a-1", "a-1=http://a", "z-9=http://z", "not in --peers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", AuthzURL: "http://127.0.0.1:1",
				NodeID: tc.self, Peers: tc.peers, PeerAdminURLs: tc.admins}.WithDefaults()
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
