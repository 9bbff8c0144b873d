package authz

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/chargeauth/chargeauth/session"
)

// Batching (ClientConfig.Batch). Calls that arrive while BatchConns batches
// are in flight wait in a queue; when a batch comes back, the queue's
// oldest calls (up to MaxBatch) go together in the next one. So under load
// one round trip carries many calls (fewer system calls on both sides of
// the hop), and a lone call goes at once, as without batching.
//
// No goroutine is started: the caller whose call opens a batch sends it
// (it "leads"), hands each caller its own answer, and gives the next batch
// to one of the callers in it, who leads that one.
//
// Deadlines: a batch runs until the earliest deadline in it (plus the
// grace, as a single call: see ClientConfig.Grace); an answer that comes
// after a caller's deadline is no answer for that caller. A call still
// waiting in the queue at its deadline leaves it with no answer and is
// never sent, so no call waits behind another past its own deadline. A
// call already sent waits for its batch, at most to its deadline plus the
// grace: like a single call, it keeps its caller's slot while the service
// may be working on it, so the service never works on more calls than
// there are callers (--authz-concurrency).

// Call states: queued -> taken (into a batch) or queued -> abandoned (its
// caller left at the deadline; a batch skips it).
const (
	callQueued int32 = iota
	callTaken
	callAbandoned
)

type batchCall struct {
	deadline       time.Time
	station, token string
	state          atomic.Int32
	// done gets one message once the call is taken: its answer, or a
	// batch to lead (in which the call is the first).
	done chan batchMsg
}

type batchMsg struct {
	res  batchResult
	lead []*batchCall
}

type batchResult struct {
	status session.Status
	reason string
	err    error
}

type batcher struct {
	maxItems, maxInflight int

	mu       sync.Mutex
	queue    []*batchCall
	inflight int // batches being sent
}

// takeLocked moves up to maxItems queued calls into a batch, skipping the
// abandoned ones and answering at once those whose deadline has passed.
// b.mu is held.
func (b *batcher) takeLocked(now time.Time) []*batchCall {
	var batch []*batchCall
	i := 0
	for ; i < len(b.queue) && len(batch) < b.maxItems; i++ {
		bc := b.queue[i]
		b.queue[i] = nil
		if !bc.state.CompareAndSwap(callQueued, callTaken) {
			continue // abandoned
		}
		if !now.Before(bc.deadline) {
			bc.done <- batchMsg{res: batchResult{err: fmt.Errorf("%w: %w (deadline passed while waiting for a batch)", ErrNoAnswer, fasthttp.ErrTimeout)}}
			continue
		}
		batch = append(batch, bc)
	}
	b.queue = b.queue[i:]
	if len(b.queue) == 0 {
		b.queue = nil // let the backing array go after a burst
	}
	return batch
}

func (c *Client) authorizeBatched(deadline time.Time, stationID, driverToken string) (session.Status, string, error) {
	if !time.Now().Before(deadline) {
		return "", "", fmt.Errorf("%w from %s: %w (deadline passed before the call)", ErrNoAnswer, c.endpoint, fasthttp.ErrTimeout)
	}
	bc := &batchCall{deadline: deadline, station: stationID, token: driverToken, done: make(chan batchMsg, 1)}
	b := c.batch
	b.mu.Lock()
	b.queue = append(b.queue, bc)
	var batch []*batchCall
	if b.inflight < b.maxInflight {
		// Nothing waits for a slot: send now, with whatever else queued.
		if batch = b.takeLocked(time.Now()); len(batch) > 0 {
			b.inflight++
		}
	}
	b.mu.Unlock()

	var msg batchMsg
	if len(batch) > 0 {
		msg.lead = batch
	} else {
		msg = c.wait(bc)
	}
	for msg.lead != nil {
		res, ok := c.lead(bc, msg.lead)
		if ok {
			return res.status, res.reason, res.err
		}
		// bc's deadline passed as the batch was taken: its answer is
		// waiting in bc.done.
		msg = c.wait(bc)
	}
	return msg.res.status, msg.res.reason, msg.res.err
}

// wait waits for bc's answer or a batch to lead, or its deadline while it
// is still queued.
func (c *Client) wait(bc *batchCall) batchMsg {
	t := time.NewTimer(time.Until(bc.deadline))
	defer t.Stop()
	select {
	case m := <-bc.done:
		return m
	case <-t.C:
		if bc.state.CompareAndSwap(callQueued, callAbandoned) {
			return batchMsg{res: batchResult{err: fmt.Errorf("%w from %s: %w (deadline passed while waiting for a batch)", ErrNoAnswer, c.endpoint, fasthttp.ErrTimeout)}}
		}
		// Taken into a batch meanwhile: its answer (or a batch to lead)
		// comes by the batch's deadline plus the grace.
		return <-bc.done
	}
}

// lead sends batch, hands each caller in it its answer, starts the next
// batch if calls are waiting, and returns own's answer (ok: own was in
// batch).
func (c *Client) lead(own *batchCall, batch []*batchCall) (res batchResult, ok bool) {
	results := make([]batchResult, len(batch))
	delivered := false
	defer func() {
		if !delivered { // a panic: no caller must wait forever
			for i := range results {
				results[i] = batchResult{err: fmt.Errorf("%w from %s: batch failed", ErrNoAnswer, c.batchEndpoint)}
			}
		}
		for i, bc := range batch {
			if bc == own {
				res, ok = results[i], true
			} else {
				bc.done <- batchMsg{res: results[i]}
			}
		}
		b := c.batch
		b.mu.Lock()
		next := b.takeLocked(time.Now())
		if len(next) == 0 {
			b.inflight--
		}
		b.mu.Unlock()
		if len(next) > 0 {
			next[0].done <- batchMsg{lead: next}
		}
	}()
	c.send(batch, results)
	delivered = true
	return res, ok
}

// send makes the round trip of batch and fills results: one answer per
// call, in order.
func (c *Client) send(batch []*batchCall, results []batchResult) {
	if len(batch) == 1 {
		bc := batch[0]
		st, reason, err := c.authorizeOne(bc.deadline, bc.station, bc.token)
		results[0] = batchResult{st, reason, err}
		return
	}
	deadline := batch[0].deadline
	for _, bc := range batch[1:] {
		if bc.deadline.Before(deadline) {
			deadline = bc.deadline
		}
	}
	fail := func(err error) {
		for i := range results {
			results[i] = batchResult{err: err}
		}
	}

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.batchEndpoint)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	body := append(req.Body()[:0], '[')
	for i, bc := range batch {
		if i > 0 {
			body = append(body, ',')
		}
		body = appendRequestBody(body, bc.station, bc.token)
	}
	req.SetBodyRaw(append(body, ']'))

	err := c.roundTrip(req, resp, deadline, c.batchEndpoint)
	if err != nil {
		fail(err)
		return
	}
	var out []authorizeResponse
	if err := json.Unmarshal(resp.Body(), &out); err != nil {
		fail(fmt.Errorf("%w from %s: bad body: %w", ErrNoAnswer, c.batchEndpoint, err))
		return
	}
	if len(out) != len(batch) {
		fail(fmt.Errorf("%w from %s: %d answers for %d calls", ErrNoAnswer, c.batchEndpoint, len(out), len(batch)))
		return
	}
	now := time.Now()
	for i, o := range out {
		status := session.Status(o.Status)
		switch {
		case now.After(batch[i].deadline):
			results[i] = batchResult{err: fmt.Errorf("%w from %s: answered after the deadline: %w", ErrNoAnswer, c.batchEndpoint, fasthttp.ErrTimeout)}
		case !status.Valid():
			results[i] = batchResult{err: fmt.Errorf("%w from %s: bad status %q", ErrNoAnswer, c.batchEndpoint, o.Status)}
		default:
			results[i] = batchResult{status: status, reason: o.Reason}
		}
	}
}
