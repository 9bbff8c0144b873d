package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chargeauth/chargeauth/node"
)

// goDuration matches a value written by time.Duration.String.
var goDuration = regexp.MustCompile(`^-?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`)

// durationKeys are keys that once held durations in other forms.
var durationKeys = map[string]bool{"took": true, "duration": true, "grace": true, "drain_delay": true,
	"retry_in": true, "down_for": true, "retry_after": true}

// checkLogDurations fails the test if a log line gives a duration other
// than as a number of milliseconds under a key ending in _ms.
func checkLogDurations(t *testing.T, lines []map[string]any) {
	t.Helper()
	for _, l := range lines {
		for _, p := range durationProblems(l) {
			t.Errorf("%s: %v", p, l)
		}
	}
}

// durationProblems lists the durations in m (and its groups) not given as
// milliseconds under a key ending in _ms.
func durationProblems(m map[string]any) []string {
	var out []string
	for k, v := range m {
		switch x := v.(type) {
		case map[string]any:
			out = append(out, durationProblems(x)...)
		case string:
			if goDuration.MatchString(x) {
				out = append(out, fmt.Sprintf("%s=%q is a Go duration string, want %s_ms as a number", k, x, k))
			}
		}
		if _, isNum := v.(float64); strings.HasSuffix(k, "_ms") && !isNum {
			out = append(out, fmt.Sprintf("%s=%v is not a number", k, v))
		}
		if durationKeys[k] {
			out = append(out, fmt.Sprintf("a duration under %q, want %s_ms", k, k))
		}
	}
	return out
}

// Whatever logs a time.Duration, the line has milliseconds under _ms, in
// both formats.
func TestLoggerWritesDurationsAsMillis(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := node.NewLogger(&buf, "info", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("x", slog.Duration("took", 1500*time.Microsecond), "wait_ms", 2*time.Second, slog.Group("g", slog.Duration("d", time.Minute)))
		out := buf.String()
		for _, want := range []string{"took_ms", "1.5", "wait_ms", "2000", "d_ms", "60000"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: %q lacks %q", format, out, want)
			}
		}
		if strings.Contains(out, "1.5ms") || strings.Contains(out, "1500000") || strings.Contains(out, "wait_ms_ms") {
			t.Errorf("%s: %q", format, out)
		}
		if format == "json" {
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatal(err)
			}
			checkLogDurations(t, []map[string]any{line})
			if line["took_ms"] != 1.5 {
				t.Errorf("took_ms = %v", line["took_ms"])
			}
		}
	}
	// The checker itself catches the old forms.
	for _, bad := range []map[string]any{{"took": "1.2s"}, {"retry_in": 5e9}, {"x_ms": "3"}, {"msg": "m", "g": map[string]any{"wait": "10s"}}} {
		if len(durationProblems(bad)) == 0 {
			t.Errorf("durationProblems accepts %v", bad)
		}
	}
}
