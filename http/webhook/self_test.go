package webhook

import (
	"net/netip"
	"testing"
)

// The host's non-loopback addresses and the service's own listeners are
// refused; other loopback ports are left to the ordinary policy.
func TestSelfGuardRefuses(t *testing.T) {
	host := func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("10.1.2.3")}, nil
	}
	g, err := newSelfGuard([]string{"127.0.0.1:8082", "[::]:8080"}, host)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ap      string
		refused bool
	}{
		{"127.0.0.1:8082", true},  // the admin listener
		{"0.0.0.0:8082", true},    // 0.0.0.0 connects to the host
		{"127.0.0.1:9999", false}, // a local receiver: policy decides
		{"127.0.0.2:8082", false}, // admin bound to 127.0.0.1 only
		{"10.1.2.3:9999", true},   // the host's own LAN address
		{"10.1.2.3:8080", true},   // the public listener on every address
		{"127.0.0.5:8080", true},  // loopback reaches a wildcard listener
		{"[::1]:8080", true},      // so does ::1
		{"10.1.2.4:8080", false},  // a neighbour
		{"93.184.215.14:443", false},
	} {
		if got := g.refuses(netip.MustParseAddrPort(tc.ap)) != ""; got != tc.refused {
			t.Errorf("refuses(%s) = %v, want %v", tc.ap, got, tc.refused)
		}
	}
}

// An address the host gains after start is refused once it is seen (on a
// miss, at most once per refreshOnMiss).
func TestSelfGuardRefreshesOnMiss(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	g, err := newSelfGuard(nil, func() ([]netip.Addr, error) { return addrs, nil })
	if err != nil {
		t.Fatal(err)
	}
	addrs = append(addrs, netip.MustParseAddr("192.0.2.10"))
	if why := g.refuses(netip.MustParseAddrPort("192.0.2.10:80")); why == "" {
		t.Errorf("a new host address is not refused")
	}
}
