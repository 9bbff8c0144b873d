package main

import (
	"os"
	"strings"
	"testing"
)

// The callback schedule flags: a bad --callback-schedule and a retired
// flag (given as a flag or as its variable) stop serve with exit 2, a
// message that names what to use instead, and nothing written.
func TestCallbackScheduleFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"first delay not 0", nil, []string{"serve", "--callback-schedule", "5s,5m"}, []string{"--callback-schedule", "must be 0s"}},
		{"not a duration", nil, []string{"serve", "--callback-schedule", "0s,5 minutes"}, []string{"--callback-schedule", `"5 minutes": not a duration`}},
		{"negative delay", nil, []string{"serve", "--callback-schedule", "0s,-1s"}, []string{"must not be negative"}},
		{"bad schedule variable", map[string]string{"CHARGEAUTH_CALLBACK_SCHEDULE": "1s"}, []string{"serve"}, []string{"CHARGEAUTH_CALLBACK_SCHEDULE", "must be 0s"}},
		{"negative max attempts", nil, []string{"serve", "--callback-max-attempts", "-1"}, []string{"--callback-max-attempts -1: must be 0 or more"}},
		{"retired backoff", nil, []string{"serve", "--callback-backoff", "1s"}, []string{"--callback-backoff is retired: use --callback-schedule"}},
		{"retired backoff with =", nil, []string{"serve", "-callback-backoff=1s"}, []string{"--callback-backoff is retired: use --callback-schedule"}},
		{"retired max backoff", nil, []string{"serve", "--data-dir", "DATADIR", "--callback-max-backoff", "10m"}, []string{"--callback-max-backoff is retired: use --callback-schedule"}},
		{"retired variable", map[string]string{"CHARGEAUTH_CALLBACK_BACKOFF": "1s"}, []string{"serve"}, []string{"$CHARGEAUTH_CALLBACK_BACKOFF", "retired", "CHARGEAUTH_CALLBACK_SCHEDULE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			dataDir := t.TempDir()
			for i, a := range tc.args {
				if a == "DATADIR" {
					tc.args[i] = dataDir
				}
			}
			code, _, stderr := runCmd(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not mention %q", stderr, w)
				}
			}
			if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
				t.Errorf("a rejected configuration created files in the data dir")
			}
		})
	}
}

// checkRetired reads flags only up to "--", and only flags: a value that
// merely contains a retired name is not one.
func TestCheckRetiredReadsOnlyFlags(t *testing.T) {
	none := func(string) string { return "" }
	for _, args := range [][]string{
		{"--acl", "callback-backoff.json"},
		{"--", "--callback-backoff"},
		{"--callback-backoffs", "1s"},
	} {
		if err := checkRetired(args, none); err != nil {
			t.Errorf("%q: %v, want no error", args, err)
		}
	}
}
