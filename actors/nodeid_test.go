package actors

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Every id carries its node, stays a UUIDv7 of the RFC 9562 variant, and
// the ids of one node come in time order and never repeat.
func TestNewIDCarriesNode(t *testing.T) {
	for _, node := range []uint16{0, 1, 2, 63, 64, 255, 256, 4242, MaxNode} {
		prev := ""
		seen := map[string]bool{}
		for range 2000 {
			id, err := NewID(node)
			if err != nil {
				t.Fatal(err)
			}
			u, err := uuid.Parse(id)
			if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
				t.Fatalf("node %d: %s is not a UUIDv7 (%v, version %d, variant %v)", node, id, err, u.Version(), u.Variant())
			}
			if got, ok := NodeOf(id); !ok || got != node {
				t.Fatalf("NodeOf(%s) = %d, %v; want %d", id, got, ok, node)
			}
			if id <= prev || seen[id] {
				t.Fatalf("node %d: id %s after %s: not increasing", node, id, prev)
			}
			seen[id], prev = true, id
		}
	}
	id, _ := NewID(2)
	if g := strings.Split(id, "-")[3]; g != "8002" {
		t.Errorf("node 2's fourth group is %q, want 8002 (%s)", g, id)
	}
	if _, err := NewID(MaxNode + 1); err == nil {
		t.Error("NewID(MaxNode+1) succeeded")
	}
}

func TestNodeOfRefusesOtherUUIDs(t *testing.T) {
	for _, id := range []string{
		"", "nope", uuid.NewString(), // a v4
		"0192b6a4-7c3e-7000-c000-000000000000", // v7, variant 110 (Microsoft)
	} {
		if n, ok := NodeOf(id); ok {
			t.Errorf("NodeOf(%q) = %d, true", id, n)
		}
	}
}

func TestNodeNumber(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want uint16
		err  bool
	}{
		{id: "chargeauth-0", want: 0},
		{id: "chargeauth-2", want: 2},
		{id: "node07", want: 7},
		{id: "16383", want: 16383},
		{id: "", err: true},
	} {
		got, err := NodeNumber(tc.id)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("NodeNumber(%q) = %d, %v; want %d, error %v", tc.id, got, err, tc.want, tc.err)
		}
	}
	// An id without a trailing number, or with one above MaxNode, hashes:
	// stable, in range.
	for _, id := range []string{"laptop", "chargeauth-16384", "x99999999999999999999"} {
		a, err1 := NodeNumber(id)
		b, err2 := NodeNumber(id)
		if err1 != nil || err2 != nil || a != b || a > MaxNode {
			t.Errorf("NodeNumber(%s) = %d, %v then %d, %v", id, a, err1, b, err2)
		}
	}
	if a, _ := NodeNumber("laptop"); a == 0 {
		t.Errorf("NodeNumber(laptop) = 0: not hashed?")
	}
}

// The engine stamps its node on every accepted id.
func TestAcceptStampsNode(t *testing.T) {
	h := startEngine(t, Config{Node: 3}, &fakeAuthz{}, &fakeReceiver{})
	for range 10 {
		rec := h.mustAccept("allowedDriverToken12345")
		if n, ok := NodeOf(rec.ID); !ok || n != 3 {
			t.Fatalf("accepted id %s carries node %d (%v), want 3", rec.ID, n, ok)
		}
	}
}
