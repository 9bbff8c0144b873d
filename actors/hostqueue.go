package actors

// hostQueue holds work due now, one FIFO per receiver host, and hands it
// out in turns: each host with work and fewer than perHost items out takes
// the next turn in its order, so that one slow receiver cannot take every
// slot from the others. It knows nothing of callbacks or actors, and is
// not safe for concurrent use (the callback sender owns one).
type hostQueue[T any] struct {
	perHost int
	queues  map[string][]T
	out     map[string]int  // items handed out and not yet Done, per host
	ready   []string        // hosts with work and a free slot, in turn order
	inReady map[string]bool // the hosts in ready
}

func newHostQueue[T any](perHost int) *hostQueue[T] {
	return &hostQueue[T]{perHost: max(perHost, 1), queues: make(map[string][]T),
		out: make(map[string]int), inReady: make(map[string]bool)}
}

// Push queues v behind host's other work.
func (q *hostQueue[T]) Push(host string, v T) {
	q.queues[host] = append(q.queues[host], v)
	q.markReady(host)
}

// Pop hands out the oldest item of the host whose turn it is, if any host
// has work and a free slot. The host has one more item out until Done.
func (q *hostQueue[T]) Pop() (host string, v T, ok bool) {
	if len(q.ready) == 0 {
		q.ready = nil // let a long line's array go
		return "", v, false
	}
	host = q.ready[0]
	q.ready = q.ready[1:]
	delete(q.inReady, host)
	items := q.queues[host]
	v = items[0]
	var zero T
	items[0] = zero
	if items = items[1:]; len(items) == 0 {
		delete(q.queues, host)
	} else {
		q.queues[host] = items
	}
	q.out[host]++
	q.markReady(host) // back of the line, if it still has work and room
	return host, v, true
}

// Done gives back the slot of an item of host's that Pop handed out.
func (q *hostQueue[T]) Done(host string) {
	if q.out[host]--; q.out[host] <= 0 {
		delete(q.out, host)
	}
	q.markReady(host)
}

// markReady gives host a turn if it has work and a free slot.
func (q *hostQueue[T]) markReady(host string) {
	if !q.inReady[host] && len(q.queues[host]) > 0 && q.out[host] < q.perHost {
		q.inReady[host] = true
		q.ready = append(q.ready, host)
	}
}
