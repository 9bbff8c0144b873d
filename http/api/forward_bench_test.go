package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/node"
)

// BenchmarkGetForwarded compares a GET answered by the owner with one that
// reaches another node and is forwarded (one extra loopback hop).
//
//	go test -run xxx -bench GetForwarded ./http/api/
func BenchmarkGetForwarded(b *testing.B) {
	addr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	pub, adm := []string{addr(), addr()}, []string{addr(), addr()}
	peers := "n-1=http://" + pub[0] + ",n-2=http://" + pub[1]
	var svcs []*node.Node
	for i, id := range []string{"n-1", "n-2"} {
		svc, err := node.Start(node.Config{Listen: pub[i], AdminListen: adm[i], FS: vfs.NewMem(), DataDir: "data",
			AuthzURL: "http://127.0.0.1:1", NodeID: id, Peers: peers,
			Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}.WithDefaults())
		if err != nil {
			b.Fatal(err)
		}
		defer svc.Close()
		svcs = append(svcs, svc)
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + pub[1] + "/charge_point/session/")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBody(sessionBody(station, tokAllowed, "http://127.0.0.1:1/cb"))
	if err := fasthttp.Do(req, resp); err != nil || resp.StatusCode() != 202 {
		b.Fatalf("POST: %v %d", err, resp.StatusCode())
	}
	var ack struct {
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(resp.Body(), &ack)

	for _, bc := range []struct{ name, addr string }{{"path=owner", pub[1]}, {"path=forwarded", pub[0]}} {
		b.Run(bc.name, func(b *testing.B) {
			c := &fasthttp.HostClient{Addr: bc.addr, MaxConns: 64}
			url := "http://" + bc.addr + "/charge_point/session/" + ack.RequestID
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				for pb.Next() {
					req.SetRequestURI(url)
					if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Errorf("GET: %v %d", err, resp.StatusCode())
						return
					}
				}
			})
		})
	}
}
