package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrForbiddenDestination is wrapped by the error of a Send whose callback
// host resolves only to addresses the policy forbids (see forbiddenAddr).
var ErrForbiddenDestination = errors.New("webhook: forbidden destination")

// Ranges refused on top of what netip's predicates cover (loopback, private
// incl. fc00::/7, link-local, multicast, unspecified). Each one can reach the
// host itself, its neighbours or a cloud metadata service.
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"; Linux routes 0.x to the host
	netip.MustParsePrefix("100.64.0.0/10"), // shared address space (CGNAT); some clouds' metadata (100.100.100.200)
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, incl. 255.255.255.255 broadcast
	netip.MustParsePrefix("::/96"),         // deprecated IPv4-compatible IPv6 (::127.0.0.1)
	netip.MustParsePrefix("fec0::/10"),     // deprecated site-local
	netip.MustParsePrefix("100::/64"),      // discard-only
}

// Prefixes that embed an IPv4 address: the address is forbidden when the
// embedded IPv4 address is.
var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64: last 4 bytes
	sixToFour   = netip.MustParsePrefix("2002::/16")    // 6to4: bytes 2..5
)

// forbiddenAddr reports whether the guard refuses to connect to ip: loopback,
// private (RFC 1918, IPv6 ULA fc00::/7), link-local (169.254/16, fe80::/10),
// multicast, unspecified, the ranges in forbiddenPrefixes, and IPv4-mapped,
// NAT64 or 6to4 addresses whose IPv4 address is one of those.
func forbiddenAddr(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	ip = ip.WithZone("").Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsMulticast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.Is6() {
		b := ip.As16()
		if nat64Prefix.Contains(ip) {
			return forbiddenAddr(netip.AddrFrom4([4]byte(b[12:16])))
		}
		if sixToFour.Contains(ip) {
			return forbiddenAddr(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	return false
}

// minDialShare is the least time one address gets when a host has several
// (as net.Dialer does, so one black-holed address does not eat the attempt).
const minDialShare = 2 * time.Second

// dial is the fasthttp DialTimeout function. It resolves the host itself,
// keeps only the addresses the policy allows (IPv4 first), and connects to
// them in turn; control checks each address again just before connect.
// timeout is what is left of the attempt (0 when fasthttp dials for a
// request waiting on a free connection; then Config.Timeout).
func (s *Sender) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = s.cfg.Timeout
	}
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("webhook: dial %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("webhook: dial %q: bad port", addr)
	}
	ips, err := s.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	allowed := make([]netip.Addr, 0, len(ips))
	var selfWhy string
	for _, want4 := range []bool{true, false} {
		for _, ip := range ips {
			if ip.Is4() != want4 || !s.permitted(ip) {
				continue
			}
			if why := s.self.refuses(netip.AddrPortFrom(ip, uint16(port))); why != "" {
				selfWhy = why
				continue
			}
			allowed = append(allowed, ip)
		}
	}
	if len(allowed) == 0 {
		if selfWhy != "" {
			return nil, fmt.Errorf("%w: %s: %s", ErrForbiddenDestination, addr, selfWhy)
		}
		if len(ips) == 1 && ips[0].String() == host {
			return nil, fmt.Errorf("%w: %s is loopback, private, link-local or reserved", ErrForbiddenDestination, host)
		}
		return nil, fmt.Errorf("%w: %s resolves to %s: loopback, private, link-local or reserved",
			ErrForbiddenDestination, host, joinAddrs(ips))
	}

	var firstErr error
	for i, ip := range allowed {
		d := net.Dialer{Deadline: deadline, Control: s.control}
		if left := len(allowed) - i; left > 1 {
			share := max(time.Until(deadline)/time.Duration(left), minDialShare)
			d.Deadline = minTime(deadline, time.Now().Add(share))
		}
		conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, uint16(port)).String())
		if err == nil {
			// Bound a lazy TLS handshake, which reads before fasthttp sets
			// the read deadline of the request; fasthttp resets both
			// deadlines before each request.
			if err := conn.SetDeadline(deadline); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if errors.Is(err, ErrForbiddenDestination) || ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// resolve returns the addresses of host, without a DNS query for a literal.
func (s *Sender) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("webhook: resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("webhook: resolve %s: no addresses", host)
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// permitted applies the policy: AllowPrivate, else not forbidden, or inside
// one of AllowCIDRs.
func (s *Sender) permitted(ip netip.Addr) bool {
	if s.cfg.AllowPrivate || !forbiddenAddr(ip) {
		return true
	}
	for _, p := range s.cfg.AllowCIDRs {
		if p.Contains(ip.Unmap()) || p.Contains(ip) {
			return true
		}
	}
	return false
}

// control runs just before the socket connects: a second check of the very
// address being dialled, so that nothing but an allowed address is ever
// connected to, whatever resolved it.
func (s *Sender) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrForbiddenDestination, address)
	}
	if !s.permitted(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenDestination, ap.Addr())
	}
	if why := s.self.refuses(ap); why != "" {
		return fmt.Errorf("%w: %s: %s", ErrForbiddenDestination, ap, why)
	}
	if s.cfg.connecting != nil {
		s.cfg.connecting(ap)
	}
	return nil
}

func joinAddrs(ips []netip.Addr) string {
	var b strings.Builder
	for i, ip := range ips {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(ip.String())
	}
	return b.String()
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// selfGuard keeps callbacks away from the host itself, whatever
// AllowPrivate and AllowCIDRs allow:
//
//   - every non-loopback address of the host's interfaces (its LAN or
//     public address) is refused: through it a callback reaches whatever
//     listens on the host, the admin API included. Loopback (127.0.0.0/8,
//     ::1) stays under the ordinary policy (refused unless AllowPrivate or
//     an AllowCIDRs range), so that a local receiver works in development.
//   - the service's own listeners are refused on every address that
//     reaches them: the bound address itself, and for a listener bound to
//     0.0.0.0 or :: every address of the host (loopback and the
//     unspecified address included) with that port.
//
// The interface addresses are read at start, again every refreshEvery, and
// on a miss at most once per refreshOnMiss (so an address the host gained
// is known within a second of a callback naming it).
type selfGuard struct {
	listeners  []netip.AddrPort
	interfaces func() ([]netip.Addr, error)

	mu struct {
		sync.Mutex
		addrs    map[netip.Addr]struct{}
		readAt   time.Time
		missedAt time.Time
	}
}

const (
	refreshEvery  = 30 * time.Second
	refreshOnMiss = time.Second
)

// newSelfGuard parses the listeners (host:port as bound; an empty host is
// the unspecified address). interfaces lists the host's addresses; nil:
// net.InterfaceAddrs.
func newSelfGuard(listeners []string, interfaces func() ([]netip.Addr, error)) (*selfGuard, error) {
	g := &selfGuard{interfaces: interfaces}
	if g.interfaces == nil {
		g.interfaces = hostAddrs
	}
	for _, l := range listeners {
		host, portStr, err := net.SplitHostPort(l)
		if err != nil {
			return nil, fmt.Errorf("webhook: own listener %q: %w", l, err)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("webhook: own listener %q: bad port", l)
		}
		ip := netip.IPv4Unspecified()
		if host != "" {
			if ip, err = netip.ParseAddr(host); err != nil {
				return nil, fmt.Errorf("webhook: own listener %q: not an IP address", l)
			}
		}
		g.listeners = append(g.listeners, netip.AddrPortFrom(ip.WithZone("").Unmap(), uint16(port)))
	}
	g.mu.Lock()
	g.refreshLocked(time.Now())
	g.mu.Unlock()
	return g, nil
}

// hostAddrs lists the addresses of the host's interfaces.
func hostAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().WithZone("").Unmap())
		}
	}
	return out, nil
}

// refreshLocked reads the interface addresses again. On an error it keeps
// the ones it had.
func (g *selfGuard) refreshLocked(now time.Time) {
	g.mu.readAt = now
	addrs, err := g.interfaces()
	if err != nil {
		return
	}
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		m[a.WithZone("").Unmap()] = struct{}{}
	}
	g.mu.addrs = m
}

// isHost reports whether ip is one of the host's interface addresses.
func (g *selfGuard) isHost(ip netip.Addr) bool {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.mu.readAt) >= refreshEvery {
		g.refreshLocked(now)
	}
	if _, ok := g.mu.addrs[ip]; ok {
		return true
	}
	if now.Sub(g.mu.missedAt) < refreshOnMiss {
		return false
	}
	g.mu.missedAt = now
	g.refreshLocked(now)
	_, ok := g.mu.addrs[ip]
	return ok
}

// refuses says why ap is the host itself ("" when it is not).
func (g *selfGuard) refuses(ap netip.AddrPort) string {
	if g == nil {
		return ""
	}
	ip := ap.Addr().WithZone("").Unmap()
	// Linux connects 0.0.0.0 and :: to the host itself; all of 127/8 is
	// the host's loopback.
	local := ip.IsLoopback() || ip.IsUnspecified()
	for _, l := range g.listeners {
		if l.Port() != ap.Port() {
			continue
		}
		if l.Addr() == ip || ip.IsUnspecified() || (l.Addr().IsUnspecified() && (local || g.isHost(ip))) {
			return "this service's own listener"
		}
	}
	if !ip.IsLoopback() && !ip.IsUnspecified() && g.isHost(ip) {
		return "an address of this host"
	}
	return ""
}
