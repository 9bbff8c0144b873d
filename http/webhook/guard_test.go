package webhook

import (
	"net/netip"
	"testing"
)

func TestForbiddenAddr(t *testing.T) {
	for _, tc := range []struct {
		ip        string
		forbidden bool
	}{
		// IPv4
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"10.0.0.1", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		{"169.254.169.254", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"255.255.255.255", true},
		{"240.0.0.1", true},
		{"100.64.0.1", true},
		{"100.100.100.200", true},
		{"192.0.0.170", true},
		{"198.18.0.1", true},
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"172.32.0.1", false},
		{"100.128.0.1", false},
		{"93.184.215.14", false},
		// IPv6
		{"::1", true},
		{"::", true},
		{"fc00::1", true},
		{"fd12:3456:789a::1", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"febf::1", true},
		{"fec0::1", true},
		{"ff02::1", true},
		{"ff01::1", true},
		{"ff0e::1", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"::ffff:169.254.169.254", true},
		{"::127.0.0.1", true},
		{"64:ff9b::7f00:1", true},    // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", true}, // NAT64 of 169.254.169.254
		{"2002:7f00:1::1", true},     // 6to4 of 127.0.0.1
		{"100::1", true},
		{"2001:4860:4860::8888", false},
		{"::ffff:8.8.8.8", false},
		{"64:ff9b::808:808", false}, // NAT64 of 8.8.8.8
		{"2002:808:808::1", false},  // 6to4 of 8.8.8.8
		{"fbff::1", false},
		{"fec0::1:0:0:0", true},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.ip)
			if got := forbiddenAddr(ip); got != tc.forbidden {
				t.Errorf("forbiddenAddr(%s) = %v, want %v", tc.ip, got, tc.forbidden)
			}
		})
	}
	if !forbiddenAddr(netip.Addr{}) {
		t.Error("the zero Addr must be forbidden")
	}
}
