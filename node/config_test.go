package node

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/schedule"
)

func TestReadAdminToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("fileToken-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, env, want string
		wantErr         bool
	}{
		{"", "", "", false},
		{"", "envToken-456", "envToken-456", false},
		{file, "", "fileToken-123", false},
		{file, "envToken-456", "", true},
		{empty, "", "", true},
		{filepath.Join(dir, "missing"), "", "", true},
	} {
		got, err := ReadAdminToken(tc.file, tc.env)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ReadAdminToken(%q, %q) = %q, %v; want %q, error %v", tc.file, tc.env, got, err, tc.want, tc.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), "fileToken") || strings.Contains(err.Error(), "envToken")) {
			t.Errorf("error %q quotes the token", err)
		}
	}
	for addr, ok := range map[string]bool{"127.0.0.1:8082": true, "[::1]:8082": true, "localhost:8082": true, "0.0.0.0:8082": false, ":8082": false} {
		if err := requireLoopback(addr); (err == nil) != ok {
			t.Errorf("requireLoopback(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

// Every setting's default (its tag) is a value its flag reads, and the
// defaults together are a valid configuration; WithDefaults of an empty
// Config is Defaults.
func TestDefaults(t *testing.T) {
	d := Defaults()
	if err := d.Validate(); err != nil {
		t.Fatalf("Defaults().Validate(): %v", err)
	}
	if got := (Config{}).WithDefaults(); !reflect.DeepEqual(got, d) {
		t.Errorf("Config{}.WithDefaults() = %+v, want Defaults() %+v", got, d)
	}
	for name, ok := range map[string]bool{
		"decision timeout": d.DecisionTimeout == 10*time.Second, "min free disk": d.MinFreeDisk == 256<<20,
		"schedule": d.CallbackSchedule.String() == "0s,5s,5m,30m,2h,5h,10h,14h,20h,24h",
		"max age":  d.CallbackMaxAge == 72*time.Hour, "listen": d.Listen == ":8080",
	} {
		if !ok {
			t.Errorf("default %s wrong: %+v", name, d)
		}
	}
	// A setting the caller set survives WithDefaults.
	if c := (Config{DecisionTimeout: time.Second, MaxBacklog: 7}).WithDefaults(); c.DecisionTimeout != time.Second || c.MaxBacklog != 7 || c.MaxInflight != 10000 {
		t.Errorf("WithDefaults overwrote a set value or missed a default: %+v", c)
	}
}

// Validate reports every problem at once, each naming its flag.
func TestValidateReportsEveryProblem(t *testing.T) {
	c := Defaults()
	c.DecisionTimeout = 0
	c.MaxInflight = -1
	c.CallbackAllowCIDR = "10.0.0.0/99"
	c.LogFormat = "xml"
	c.CallbackSchedule = nil
	c.AuthzURL = "http://127.0.0.1:1"
	c.ACL = "acl.json"
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"--decision-timeout 0s: must be at least 1ms", "--max-inflight -1: must be at least 1",
		"--callback-allow-cidr", "--log-format", "--callback-schedule", "--acl configures the embedded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// --callback-backoff replaces the schedule's second delay, and only that.
func TestScheduleWithBackoff(t *testing.T) {
	c := Defaults()
	c.CallbackSchedule = schedule.Delays{0, time.Second, time.Minute}
	if got := c.Schedule().String(); got != "0s,1s,1m" {
		t.Errorf("no backoff: %s", got)
	}
	c.CallbackBackoff = 5 * time.Second
	if got := c.Schedule().String(); got != "0s,5s,1m" {
		t.Errorf("backoff 5s: %s", got)
	}
	if c.CallbackSchedule[1] != time.Second {
		t.Errorf("Schedule changed the configured schedule: %s", c.CallbackSchedule)
	}
}
