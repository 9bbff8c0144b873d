package actors

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/google/uuid"
)

func init() {
	// NewV7 takes its random bits from google/uuid's pool (crypto/rand,
	// read 256 bytes at a time) instead of a 16-byte read of its own,
	// whose buffer escapes to the heap: one allocation less per accept.
	// Enabled here, before any id can be made, as the library asks.
	uuid.EnableRandPool()
}

// MaxNode is the largest node number a request id can carry (14 bits).
const MaxNode = 1<<14 - 1

// NewID returns a new request id owned by node: a UUIDv7 (RFC 9562) whose
// first 14 bits of rand_b, right after the variant, hold the node number.
// See doc.go ("Request ids") for the layout.
//
// google/uuid's NewV7 makes (unix_ts_ms, rand_a) strictly increasing within
// a process (rand_a is a sub-millisecond sequence), so the ids of one node
// never repeat; the node bits keep two nodes apart; the 48 random bits left
// separate the runs of one node if its clock steps back.
func NewID(node uint16) (string, error) {
	if node > MaxNode {
		return "", fmt.Errorf("actors: node number %d: more than %d", node, MaxNode)
	}
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("actors: new id: %w", err)
	}
	u[8] = 0x80 | byte(node>>8) // variant 10, then the node's 6 high bits
	u[9] = byte(node)
	return u.String(), nil
}

// NodeOf returns the node number carried by a request id made by NewID. ok
// is false for a string that is not a UUIDv7 of the RFC 9562 variant. Ids
// written before node numbers existed are UUIDv7s too: their "node" is
// random, so a caller looks an id up locally before it trusts NodeOf.
func NodeOf(id string) (node uint16, ok bool) {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
		return 0, false
	}
	return uint16(u[8]&0x3f)<<8 | uint16(u[9]), true
}

// ErrNodeID marks an empty node id.
var ErrNodeID = errors.New("actors: node id")

// NodeNumber derives a node's number from its node id: the decimal number
// that ends the id ("chargeauth-2" -> 2, a Kubernetes StatefulSet pod's
// ordinal; "node07" -> 7) if it is at most MaxNode; otherwise (no trailing
// number, or a larger one) the FNV-1a hash of the whole id folded to 14
// bits. Two ids can give one number ("a-2" and "b-2", or two hashes): the
// service refuses a --peers list in which two ids share a number.
func NodeNumber(nodeID string) (uint16, error) {
	if nodeID == "" {
		return 0, fmt.Errorf("%w: empty", ErrNodeID)
	}
	i := len(nodeID)
	for i > 0 && nodeID[i-1] >= '0' && nodeID[i-1] <= '9' {
		i--
	}
	if i < len(nodeID) && len(nodeID)-i <= 5 {
		if n, err := strconv.Atoi(nodeID[i:]); err == nil && n <= MaxNode {
			return uint16(n), nil
		}
	}
	h := fnv.New32a()
	h.Write([]byte(nodeID))
	s := h.Sum32()
	return uint16((s ^ s>>14 ^ s>>28) & MaxNode), nil
}
