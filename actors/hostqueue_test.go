package actors

import (
	"fmt"
	"strings"
	"testing"
)

// popAll pops until the queue gives nothing, and writes what it got as
// host:item, in order.
func popAll(q *hostQueue[int]) string {
	var got []string
	for {
		h, v, ok := q.Pop()
		if !ok {
			return strings.Join(got, " ")
		}
		got = append(got, fmt.Sprintf("%s:%d", h, v))
	}
}

// Hosts take turns, whatever order their work came in; each host's work
// goes out oldest first.
func TestHostQueueTurns(t *testing.T) {
	q := newHostQueue[int](10)
	for i := range 4 {
		q.Push("slow", i)
	}
	q.Push("fast", 10)
	q.Push("fast", 11)
	q.Push("other", 20)
	if got, want := popAll(q), "slow:0 fast:10 other:20 slow:1 fast:11 slow:2 slow:3"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// A host has at most perHost items out; Done frees a slot, and the host
// takes its turn again behind those waiting.
func TestHostQueuePerHostBound(t *testing.T) {
	q := newHostQueue[int](2)
	for i := range 5 {
		q.Push("a", i)
	}
	q.Push("b", 10)
	if got, want := popAll(q), "a:0 b:10 a:1"; got != want {
		t.Fatalf("got %s, want %s: a has 2 out", got, want)
	}
	q.Done("a")
	q.Push("b", 11)
	if got, want := popAll(q), "a:2 b:11"; got != want { // a was ready first
		t.Fatalf("after one Done of a: got %s, want %s", got, want)
	}
	q.Done("b")
	q.Done("b")
	q.Done("a")
	q.Done("a")
	if got, want := popAll(q), "a:3 a:4"; got != want {
		t.Errorf("after every Done: got %s, want %s", got, want)
	}
	q.Done("a")
	q.Done("a")
	if len(q.out) != 0 || len(q.queues) != 0 || len(q.ready) != 0 || len(q.inReady) != 0 {
		t.Errorf("empty queue keeps state: out %v queues %v ready %v", q.out, q.queues, q.ready)
	}
}
