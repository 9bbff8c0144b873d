package node

import (
	"errors"
	"time"

	"github.com/chargeauth/chargeauth/actors"
	"github.com/chargeauth/chargeauth/persistence"
)

// retain deletes delivered and failed records older than Retention, and
// idempotency keys older than their 24 h, in batches, every tenth of the
// retention (at most every minute). Accepts do not wait for it: they take
// none of the locks it holds.
func (n *Node) retain() {
	defer close(n.retainDone)
	every := min(max(n.cfg.Retention/10, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.stopRetain:
			return
		case <-t.C:
		}
		n.expireIdempotencyKeys(n.stopRetain)
		for {
			count, err := n.store.Expire(n.cfg.Now().Add(-n.cfg.Retention), 1000)
			if err != nil {
				if !errors.Is(err, persistence.ErrClosing) {
					n.log.Error("retention", "err", err)
				}
				break
			}
			if count > 0 {
				n.log.Info("retention: deleted old records", "count", count)
			}
			if count < 1000 {
				break
			}
			select {
			case <-n.stopRetain:
				return
			default:
			}
		}
	}
}

// expireIdempotencyKeys deletes the keys older than their 24 h, in batches,
// until none is left or stop closes. An expired key is free whether
// deleted yet or not.
func (n *Node) expireIdempotencyKeys(stop <-chan struct{}) {
	for {
		count, err := n.store.ExpireIdempotencyKeys(n.cfg.Now().Add(-actors.IdempotencyTTL), 1000)
		if err != nil {
			if !errors.Is(err, persistence.ErrClosing) {
				n.log.Error("retention of idempotency keys", "err", err)
			}
			return
		}
		if count < 1000 {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}
