package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dustin/go-humanize"

	"github.com/chargeauth/chargeauth/http/api"
	"github.com/chargeauth/chargeauth/http/authz"
	"github.com/chargeauth/chargeauth/http/webhook"
	"github.com/chargeauth/chargeauth/schedule"
)

// Config is every setting of a node. Each field tagged `flag` is one
// setting, declared here once: its flag name (the serve command's --name,
// read also from CHARGEAUTH_<NAME>), its default and its doc, which is the
// flag's help. Bind registers them as flags; Defaults gives them their
// defaults; Validate checks them all at once. Start hands each package only
// its part.
//
// The fields after the settings are not settings: code hands them over
// (the serve command, tests, the bench).
type Config struct {
	// Listeners and store.
	Listen      string   `flag:"listen" default:":8080" doc:"public API address"`
	AdminListen string   `flag:"admin-listen" default:"127.0.0.1:8082" doc:"admin listener address (health, readiness, metrics, sessions)"`
	DataDir     string   `flag:"data-dir" default:"./data" doc:"directory of the Pebble store"`
	MinFreeDisk ByteSize `flag:"min-free-disk" default:"256MiB" doc:"free space under which accepts get 503"`

	// The authorization service: an external one, or the embedded one.
	AuthzURL          string        `flag:"authz-url" default:"" doc:"base URL of an external authorization service (empty: start the embedded one)"`
	AuthzListen       string        `flag:"authz-listen" default:"127.0.0.1:8081" doc:"address of the embedded authorization service"`
	ACL               string        `flag:"acl" default:"" doc:"ACL file of the embedded authorization service (empty: a small built-in sample)"`
	ACLReloadInterval time.Duration `flag:"acl-reload-interval" default:"1s" doc:"how often the --acl file is checked for changes (0: only on SIGHUP)"`
	AuthzBatch        bool          `flag:"authz-batch" default:"false" doc:"send concurrent calls to the --authz-url service in batches (POST /authorize/batch); the embedded service always gets batches"`

	// Decisions.
	DecisionTimeout  time.Duration `flag:"decision-timeout" default:"10s" doc:"time from accept to the deadline, after which the decision is unknown"`
	AuthzConcurrency int           `flag:"authz-concurrency" default:"64" doc:"most calls to the authorization service at once"`

	// Callbacks.
	CallbackSecret          string          `flag:"callback-secret" default:"" doc:"whsec_<base64> secret(s), space-separated, that sign callbacks (empty: unsigned)"`
	CallbackSchedule        schedule.Delays `flag:"callback-schedule" default:"0s,5s,5m,30m,2h,5h,10h,14h,20h,24h" doc:"delays between callback attempts, comma-separated, the first (0s) before the first attempt; each jittered by up to 20%"`
	CallbackBackoff         time.Duration   `flag:"callback-backoff" default:"0s" doc:"the first retry delay: replaces the second entry of --callback-schedule (0: the schedule's own)"`
	CallbackMaxAttempts     int             `flag:"callback-max-attempts" default:"0" doc:"callback attempts in all, the first included (0: one per --callback-schedule entry; more: its last delay repeats)"`
	CallbackTimeout         time.Duration   `flag:"callback-timeout" default:"10s" doc:"timeout of one callback attempt"`
	CallbackMaxAge          time.Duration   `flag:"callback-max-age" default:"72h" doc:"no callback attempt later than this after the decision; then the request is failed"`
	AllowPrivateCallbacks   bool            `flag:"allow-private-callbacks" default:"false" doc:"allow callbacks to loopback, private and link-local addresses"`
	CallbackAllowCIDR       string          `flag:"callback-allow-cidr" default:"" doc:"address ranges (CIDR, space- or comma-separated) callbacks may reach even if private"`
	CallbackHostConcurrency int             `flag:"callback-host-concurrency" default:"64" doc:"most callbacks in flight to one receiver host"`
	CallbackCAFile          string          `flag:"callback-ca-file" default:"" doc:"PEM file of extra root certificates for HTTPS callbacks"`

	// Load and lifetime.
	MaxInflight   int           `flag:"max-inflight" default:"10000" doc:"most live request actors; the rest wait in the store"`
	MaxBacklog    int           `flag:"max-backlog" default:"0" doc:"most requests waiting in the store before accepts get 503 (0: bounded by disk only)"`
	ShutdownGrace time.Duration `flag:"shutdown-grace" default:"10s" doc:"time in-flight work gets to finish on SIGTERM/SIGINT"`
	Retention     time.Duration `flag:"retention" default:"168h" doc:"how long delivered and failed records are kept"`

	// Operations.
	AdminTokenFile string        `flag:"admin-token-file" default:"" doc:"file holding the admin API's bearer token (or set CHARGEAUTH_ADMIN_TOKEN); required when --admin-listen is not loopback"`
	NodeID         string        `flag:"node-id" default:"" doc:"this node's id in a fleet; its trailing number is carried by every request id (empty: the hostname)"`
	Peers          string        `flag:"peers" default:"" doc:"the fleet's nodes, this one included, as id=public-base-URL,... (empty: a single node)"`
	PeerAdminURLs  string        `flag:"peer-admin-urls" default:"" doc:"admin base URLs of peers, id=URL,... (default: each peer's host with this node's admin port)"`
	DrainDelay     time.Duration `flag:"drain-delay" default:"5s" doc:"on SIGTERM/SIGINT, time /readyz answers 503 while the node still serves, before it stops"`
	LogLevel       string        `flag:"log-level" default:"info" doc:"debug, info, warn or error"`
	LogFormat      string        `flag:"log-format" default:"json" doc:"json or text"`

	// AdminToken is the admin API's bearer token itself (the serve command
	// reads it from CHARGEAUTH_ADMIN_TOKEN, never from a flag, so that it
	// is never on a command line); AdminTokenFile is the other way to give
	// it. Default: "".
	AdminToken string
	// ACLStatus reports the ACL of an authorization service the caller runs
	// at AuthzURL, for /metrics. The embedded service reports its own.
	// Default: nil (an external service keeps its own metrics).
	ACLStatus func() authz.ACLStatus
	// OwnAddrs are other listeners of this process that callbacks must
	// never reach, like the node's own. Default: none.
	OwnAddrs []string
	// Logger. Default: slog.Default().
	Logger *slog.Logger
	// FS is the store's filesystem (tests: vfs.NewMem()). Default: vfs.Default.
	FS vfs.FS
	// Now is the clock of retention and of the admin API (tests).
	// Default: time.Now.
	Now func() time.Time
	// LookupHost resolves peer names (tests). Default: net.DefaultResolver.
	LookupHost func(context.Context, string) ([]string, error)
}

// Defaults returns a Config holding every setting's default.
func Defaults() Config {
	var c Config
	for _, s := range c.settings() {
		if err := s.value.Set(s.def); err != nil {
			panic(fmt.Sprintf("node: default of --%s: %v", s.name, err)) // a typo in a tag above
		}
	}
	return c
}

// WithDefaults returns c with each setting left at its zero value set to its
// default: for code that writes only the settings it changes (tests, the
// bench). A setting whose zero means something (--shutdown-grace 0,
// --drain-delay 0, --acl-reload-interval 0) and whose default is not zero
// takes the default too; set it after.
func (c Config) WithDefaults() Config {
	for _, s := range c.settings() {
		if s.field.IsZero() {
			_ = s.value.Set(s.def) // checked by Defaults' test
		}
	}
	return c
}

// Bind registers every setting as a flag of fs, with c's value as the
// flag's default and the setting's doc as its help: parsing fs sets c.
func (c *Config) Bind(fs *flag.FlagSet) {
	for _, s := range c.settings() {
		fs.Var(s.value, s.name, s.doc)
	}
}

// setting is one tagged field of Config, as a flag.Value over the field.
type setting struct {
	name, def, doc string
	field          reflect.Value
	value          flag.Value
}

func (c *Config) settings() []setting {
	v := reflect.ValueOf(c).Elem()
	var out []setting
	scratch := flag.NewFlagSet("", flag.ContinueOnError) // makes the flag package's own Values
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, ok := f.Tag.Lookup("flag")
		if !ok {
			continue
		}
		s := setting{name: name, def: f.Tag.Get("default"), doc: f.Tag.Get("doc"), field: v.Field(i)}
		switch p := v.Field(i).Addr().Interface().(type) {
		case *string:
			scratch.StringVar(p, name, *p, "")
		case *int:
			scratch.IntVar(p, name, *p, "")
		case *bool:
			scratch.BoolVar(p, name, *p, "")
		case *time.Duration:
			scratch.DurationVar(p, name, *p, "")
		case *schedule.Delays:
			scratch.Var((*scheduleValue)(p), name, "")
		case flag.Value:
			scratch.Var(p, name, "")
		default:
			panic(fmt.Sprintf("node: setting %s: no flag for a %s", name, f.Type))
		}
		s.value = scratch.Lookup(name).Value
		out = append(out, s)
	}
	return out
}

// scheduleValue is --callback-schedule: comma-separated Go durations.
type scheduleValue schedule.Delays

func (s *scheduleValue) String() string { return schedule.Delays(*s).String() }

func (s *scheduleValue) Set(v string) error {
	d, err := schedule.Parse(v)
	if err != nil {
		return err
	}
	*s = scheduleValue(d)
	return nil
}

// ByteSize is a size such as 256MiB or 1GB.
type ByteSize uint64

func (b *ByteSize) String() string { return humanize.IBytes(uint64(*b)) }

// Set reads a size: a number and a unit (256MiB, 1GB, 512k).
func (b *ByteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("not a size (e.g. 256MiB): %q", s)
	}
	*b = ByteSize(n)
	return nil
}

// Validate reports every problem of c at once (one per line, each naming
// its flag): what the packages below would refuse, said in the flags'
// words, and what they would take as "use the default".
func (c *Config) Validate() error {
	ranges := []struct {
		name  string
		value any
		ok    bool
		want  string
	}{
		{"decision-timeout", c.DecisionTimeout, c.DecisionTimeout >= time.Millisecond, "at least 1ms"},
		{"authz-concurrency", c.AuthzConcurrency, c.AuthzConcurrency >= 1, "at least 1"},
		{"callback-backoff", c.CallbackBackoff, c.CallbackBackoff >= 0, "0 or more"},
		{"callback-max-attempts", c.CallbackMaxAttempts, c.CallbackMaxAttempts >= 0, "0 or more"},
		{"callback-timeout", c.CallbackTimeout, c.CallbackTimeout >= time.Millisecond, "at least 1ms"},
		{"callback-max-age", c.CallbackMaxAge, c.CallbackMaxAge >= time.Millisecond, "at least 1ms"},
		{"max-inflight", c.MaxInflight, c.MaxInflight >= 1, "at least 1"},
		{"callback-host-concurrency", c.CallbackHostConcurrency, c.CallbackHostConcurrency >= 1, "at least 1"},
		{"max-backlog", c.MaxBacklog, c.MaxBacklog >= 0, "0 or more"},
		{"shutdown-grace", c.ShutdownGrace, c.ShutdownGrace >= 0, "0 or more"},
		{"retention", c.Retention, c.Retention > 0, "positive"},
		{"acl-reload-interval", c.ACLReloadInterval, c.ACLReloadInterval >= 0, "0 or more"},
		{"drain-delay", c.DrainDelay, c.DrainDelay >= 0, "0 or more"},
	}
	var errs []error
	for _, r := range ranges {
		if !r.ok {
			errs = append(errs, fmt.Errorf("--%s %v: must be %s", r.name, r.value, r.want))
		}
	}
	for _, n := range []struct{ name, v string }{{"listen", c.Listen}, {"admin-listen", c.AdminListen}, {"data-dir", c.DataDir}} {
		if n.v == "" {
			errs = append(errs, fmt.Errorf("--%s: must not be empty", n.name))
		}
	}
	if c.AuthzURL == "" && c.AuthzListen == "" {
		errs = append(errs, errors.New("--authz-listen: must not be empty without --authz-url"))
	}
	if err := c.Schedule().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--callback-schedule %s: %v", c.CallbackSchedule, err))
	}
	if c.CallbackBackoff > 0 && len(c.CallbackSchedule) < 2 {
		errs = append(errs, fmt.Errorf("--callback-backoff %v: --callback-schedule %s has no retry whose delay it could set", c.CallbackBackoff, c.CallbackSchedule))
	}
	for _, s := range strings.Fields(c.CallbackSecret) {
		if _, err := webhook.ParseSecret(s); err != nil {
			errs = append(errs, fmt.Errorf("--callback-secret: %v", err))
		}
	}
	if c.AuthzURL != "" {
		if err := (&authz.ClientConfig{URL: c.AuthzURL}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--authz-url %q: %v", c.AuthzURL, err))
		}
		if c.ACL != "" {
			errs = append(errs, errors.New("--acl configures the embedded authorization service: it cannot be used with --authz-url"))
		}
	}
	if _, err := c.allowCIDRs(); err != nil {
		errs = append(errs, err)
	}
	if c.CallbackCAFile != "" {
		if _, err := os.Stat(c.CallbackCAFile); err != nil {
			errs = append(errs, fmt.Errorf("--callback-ca-file: %v", err))
		}
	}
	if _, err := NewLogger(io.Discard, c.LogLevel, c.LogFormat); err != nil {
		errs = append(errs, err)
	}
	if _, _, _, err := c.fleet(); err != nil {
		errs = append(errs, err)
	}
	if tok, err := c.adminToken(); err != nil {
		errs = append(errs, err)
	} else if tok == "" && c.AdminListen != "" {
		if err := requireLoopback(c.AdminListen); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Schedule is the callback schedule in force: --callback-schedule with its
// second delay (the first retry's) replaced by --callback-backoff, when
// that is set.
func (c *Config) Schedule() schedule.Delays {
	d := c.CallbackSchedule
	if c.CallbackBackoff > 0 && len(d) >= 2 {
		d = append(schedule.Delays(nil), d...)
		d[1] = c.CallbackBackoff
	}
	return d
}

// allowCIDRs reads --callback-allow-cidr: space- or comma-separated ranges.
func (c *Config) allowCIDRs() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(c.CallbackAllowCIDR, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("--callback-allow-cidr %q: not a CIDR range (e.g. 10.1.0.0/16)", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// fleet reads --node-id (the hostname when empty), --peers and
// --peer-admin-urls: the node's id, its number and the fleet.
func (c *Config) fleet() (id string, number uint16, peers []api.Peer, err error) {
	id = c.NodeID
	if id == "" {
		h, herr := os.Hostname()
		if herr != nil && c.Peers != "" {
			return "", 0, nil, fmt.Errorf("--node-id: empty and no hostname: %v", herr)
		}
		id = h
	}
	if peers, err = api.ParsePeers(c.Peers, c.PeerAdminURLs); err != nil {
		return "", 0, nil, err
	}
	if number, err = api.CheckFleet(id, peers); err != nil {
		return "", 0, nil, err
	}
	return id, number, peers, nil
}

// AdminTokenEnv holds the admin token itself (not a file name). The serve
// command reads it into Config.AdminToken, not through a flag, so that the
// token never appears on a command line.
const AdminTokenEnv = "CHARGEAUTH_ADMIN_TOKEN"

// adminToken is the admin token from --admin-token-file (surrounding white
// space trimmed) or AdminToken; "" when neither is set. Setting both, or
// an empty file, is an error. The token is never part of an error message.
func (c *Config) adminToken() (string, error) {
	return ReadAdminToken(c.AdminTokenFile, c.AdminToken)
}

// ReadAdminToken returns the token in file (surrounding white space
// trimmed), or token when file is "". Both set, or an empty file, is an
// error that never quotes the token.
func ReadAdminToken(file, token string) (string, error) {
	if file == "" {
		return strings.TrimSpace(token), nil
	}
	if token != "" {
		return "", fmt.Errorf("--admin-token-file and %s are both set: set one", AdminTokenEnv)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %v", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--admin-token-file %s: the file is empty", file)
	}
	return tok, nil
}

// requireLoopback refuses an admin address that is not loopback: the
// admin API is open when no token is configured.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--admin-listen %q: %v", addr, err)
	}
	why := ""
	if host == "" {
		why = "it listens on every interface"
	} else if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.IsLoopback() {
			why = fmt.Sprintf("%s is not a loopback address", ip)
			if ip.IsUnspecified() {
				why = fmt.Sprintf("%s listens on every interface", ip)
			}
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return fmt.Errorf("--admin-listen %q: %v", addr, err)
		}
		for _, ip := range ips {
			if !ip.Unmap().IsLoopback() {
				why = fmt.Sprintf("%s resolves to %s, not a loopback address", host, ip)
				break
			}
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("--admin-listen %s: %s, and no admin token is set: the admin API (sessions, redeliver) would be open to anyone who reaches it; set --admin-token-file or %s, or listen on loopback (127.0.0.1)", addr, why, AdminTokenEnv)
}

// NewLogger builds the JSON (or text) slog logger of --log-level and
// --log-format.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: durationMillis}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be json or text", format)
}

// durationMillis keeps durations in one form in every log line: a number of
// milliseconds under a key ending in _ms (README "Logs"). Our own lines
// write them so; this catches a time.Duration from anywhere else (a
// library's line, a slog.Duration), which slog would write as nanoseconds
// in JSON and as "1.5s" in text.
func durationMillis(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindDuration {
		return a
	}
	key := a.Key
	if !strings.HasSuffix(key, "_ms") {
		key += "_ms"
	}
	return slog.Float64(key, float64(a.Value.Duration().Microseconds())/1000)
}
