package main

import (
	"flag"
	"io"
	"testing"

	"github.com/chargeauth/chargeauth/node"
)

// The callback schedule flags: a bad --callback-schedule or
// --callback-backoff, and the retired --callback-max-backoff (given as a
// flag or as its variable), stop serve with exit 2, a message that names
// the flag (and what to use instead), and nothing written.
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
		{"negative backoff", nil, []string{"serve", "--callback-backoff", "-1s"}, []string{"--callback-backoff -1s: must be 0 or more"}},
		{"backoff not a duration", map[string]string{"CHARGEAUTH_CALLBACK_BACKOFF": "soon"}, []string{"serve"}, []string{"$CHARGEAUTH_CALLBACK_BACKOFF", "--callback-backoff", "not a duration"}},
		{"backoff without a retry", nil, []string{"serve", "--callback-schedule", "0s", "--callback-backoff", "1s"}, []string{"--callback-backoff 1s", "no retry"}},
		{"retired max backoff", nil, []string{"serve", "--data-dir", "DATADIR", "--callback-max-backoff", "10m"}, []string{"--callback-max-backoff is retired: use --callback-schedule"}},
		{"retired max backoff with =", nil, []string{"serve", "-callback-max-backoff=10m"}, []string{"--callback-max-backoff is retired: use --callback-schedule"}},
		{"retired variable", map[string]string{"CHARGEAUTH_CALLBACK_MAX_BACKOFF": "1s"}, []string{"serve"}, []string{"$CHARGEAUTH_CALLBACK_MAX_BACKOFF", "retired", "CHARGEAUTH_CALLBACK_SCHEDULE"}},
	} {
		t.Run(tc.name, func(t *testing.T) { mustRefuse(t, tc.env, tc.args, tc.want...) })
	}
}

// checkRetired reads flags only up to "--", and only flags: a value that
// merely contains a retired name is not one.
func TestCheckRetiredReadsOnlyFlags(t *testing.T) {
	none := func(string) string { return "" }
	for _, args := range [][]string{
		{"--acl", "callback-max-backoff.json"},
		{"--", "--callback-max-backoff"},
		{"--callback-max-backoffs", "1s"},
	} {
		if err := checkRetired(args, none); err != nil {
			t.Errorf("%q: %v, want no error", args, err)
		}
	}
}

// --callback-backoff D (or CHARGEAUTH_CALLBACK_BACKOFF) is DESIGN.md's
// "first retry delay": it replaces the second entry of --callback-schedule,
// whichever schedule is given; left at 0 the schedule is the one given.
func TestCallbackBackoffSetsFirstRetry(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"default", nil, nil, "0s,5s,5m,30m,2h,5h,10h,14h,20h,24h"},
		{"flag", nil, []string{"--callback-backoff", "30s"}, "0s,30s,5m,30m,2h,5h,10h,14h,20h,24h"},
		{"variable", map[string]string{"CHARGEAUTH_CALLBACK_BACKOFF": "1m"}, nil, "0s,1m,5m,30m,2h,5h,10h,14h,20h,24h"},
		{"with a schedule", nil, []string{"--callback-schedule", "0s,1s,2s", "--callback-backoff", "250ms"}, "0s,250ms,2s"},
		{"flag wins over variable", map[string]string{"CHARGEAUTH_CALLBACK_BACKOFF": "1m"}, []string{"--callback-backoff", "2s"}, "0s,2s,5m,30m,2h,5h,10h,14h,20h,24h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CHARGEAUTH_CALLBACK_BACKOFF", "")
			t.Setenv("CHARGEAUTH_CALLBACK_SCHEDULE", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg := node.Defaults()
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			cfg.Bind(fs)
			if err := parseFlags(fs, tc.args, io.Discard, "chargeauth serve [flags]"); err != nil {
				t.Fatal(err)
			}
			if got := cfg.Schedule().String(); got != tc.want {
				t.Errorf("schedule %s, want %s", got, tc.want)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}
