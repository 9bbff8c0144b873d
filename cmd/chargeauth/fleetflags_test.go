package main

import (
	"strings"
	"testing"
)

// A fleet configuration that cannot work exits 2 before anything starts:
// two peers with one node number, this node missing from --peers, a peer
// that is not id=URL, a negative drain.
func TestFleetFlagsExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--node-id", "chargeauth-2", "--peers", "chargeauth-2=http://a:8080,other-2=http://b:8080"}, "both have node number 2"},
		{[]string{"--node-id", "chargeauth-3", "--peers", "chargeauth-1=http://a:8080,chargeauth-2=http://b:8080"}, "does not list this node"},
		{[]string{"--node-id", "chargeauth-1", "--peers", "chargeauth-1"}, "not id=URL"},
		{[]string{"--drain-delay", "-1s"}, "--drain-delay"},
	} {
		code, _, stderr := runCmd(t, append([]string{"serve", "--data-dir", t.TempDir()}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	t.Setenv("CHARGEAUTH_NODE_ID", "chargeauth-7")
	t.Setenv("CHARGEAUTH_PEERS", "chargeauth-1=http://a:8080")
	if code, _, stderr := runCmd(t, "serve", "--data-dir", t.TempDir()); code != 2 || !strings.Contains(stderr, `"chargeauth-7"`) {
		t.Errorf("from the variables: exit %d, stderr %q; want 2 naming chargeauth-7", code, stderr)
	}
}
