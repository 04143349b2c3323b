package redlock

import (
	"context"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Waiting for a held lock. Lock does not poll: after a failed attempt it
// subscribes to the key's release channel (wake.go), tries once more (so a
// release between the attempt and the subscription is not missed), then
// sleeps until the holder's release is announced or until the holder's keys
// must have expired, whichever comes first.

// Waiting parameters.
const (
	// MaxWakeInterval caps how long a waiting Lock sleeps between attempts
	// when no release is announced: a lost message, a holder that crashed
	// or a key without TTL costs at most this (or the holder's TTL, if less).
	MaxWakeInterval = 5 * time.Second

	// SplitBackoff is the base of the randomized back-off after a split
	// vote (no contender reached a quorum): the k-th consecutive split waits
	// a random time in [0, SplitBackoff×2^k), capped at MaxSplitBackoff, so
	// that one contender soon gets ahead of the others.
	SplitBackoff    = 2 * time.Millisecond
	MaxSplitBackoff = 128 * time.Millisecond
)

// miss is what a failed attempt tells the waiting logic.
type miss struct {
	// wait is the earliest time after which a quorum of nodes may be free:
	// the quorum-th smallest of the remaining TTLs (0 for a node that
	// granted us). -1 means unknown (too few answers, or keys without TTL).
	wait time.Duration
	// winner is a token that refused us on a quorum of nodes: another
	// client holds the lock, and only its release is worth waking for.
	winner string
	// split reports that we were granted some nodes but no quorum, and no
	// other token holds a quorum either: contenders split the vote.
	split bool
}

// missOf derives a miss from the votes of an acquire fan-out. It reads the
// result of a node only when its vote is known.
func missOf(votes []vote, results []result) *miss {
	n, q := len(votes), quorum(len(votes))
	m := miss{wait: -1}
	var free []time.Duration
	holders := map[string]int{}
	yes := 0
	for i, v := range votes {
		switch v {
		case voteYes:
			yes++
			free = append(free, 0)
		case voteNo:
			r := results[i]
			holders[r.holder]++
			if holders[r.holder] >= q {
				m.winner = r.holder
			}
			if r.val >= 0 {
				free = append(free, time.Duration(r.val)*time.Millisecond)
			}
		}
	}
	m.split = m.winner == "" && yes > 0 && yes < q
	if len(free) >= q && n > 0 {
		slices.Sort(free)
		m.wait = free[q-1]
	}
	return &m
}

// Lock acquires key for ttl, waiting until it is free or ctx ends.
//
// Waiting costs no polling: Lock subscribes to the key's release channel on
// every node, tries again, and then sleeps until the holder's Unlock is
// announced — typically it resumes within a round trip of the release — or
// until the holder's TTL must have run out (a holder that crashed), at most
// MaxWakeInterval. When contenders split the vote it backs off for a
// random, growing time (SplitBackoff). Calls of one Client waiting for the
// same key queue in FIFO order, so only the head competes over the network;
// handoffs between Clients always go through the nodes. Each attempt is a
// TryLock with a fresh token.
//
// When ctx ends it returns an error matching ErrNotObtained and ctx.Err(),
// carrying the last attempt's outcome; it leaves nothing subscribed.
func (c *Client) Lock(ctx context.Context, key string, ttl time.Duration) (*Lock, error) {
	if err := c.checkLockArgs("Lock", ctx, key, ttl); err != nil {
		return nil, err
	}
	ttl = wireTTL(ttl)
	name := c.cfg.keyPrefix + key
	slot, err := c.queue.enter(ctx, c.done, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: waiting behind other Lock calls of this Client: %w", ErrNotObtained, key, err)
	}
	defer c.queue.leave(name, slot)

	var w *watch // the queue's subscription, shared by its successive heads
	if sib := c.holders.get(name); sib != nil {
		// Another call of this Client holds the key. Rushing in now would
		// beat other Clients' waiters, who learn of the release only from
		// the nodes: wait for the same announcement they wait for. The
		// holder is checked again once a quorum confirmed our subscription:
		// its Unlock publishes on a quorum before it forgets the lock, so if
		// it still holds, one of those nodes will announce to us.
		w = c.queue.watch(slot, c.hub, releaseChannel(name))
		w.awaitConfirmed(ctx, quorum(len(c.nodes)), c.cfg.nodeTimeoutFor(ttl))
		if c.holders.get(name) == sib {
			d := min(time.Until(sib.Until()), MaxWakeInterval)
			if err := c.waitRelease(ctx, w, &miss{winner: sib.token, wait: max(d, 0)}, 0); err != nil {
				return nil, fmt.Errorf("%w: %q: %w", ErrNotObtained, key, err)
			}
		}
	}
	splits := 0
	for {
		l, m, err := c.attempt(ctx, key, ttl)
		if err == nil {
			c.queue.narrow(slot)
		}
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return l, err
		}
		if w == nil {
			// Subscribe, then try again at once. A release announced on a
			// quorum of nodes reaches one of ours once a quorum confirmed;
			// a node that does not confirm in time only costs the timer.
			w = c.queue.watch(slot, c.hub, releaseChannel(name))
			w.awaitConfirmed(ctx, quorum(len(c.nodes)), c.cfg.nodeTimeoutFor(ttl))
			continue
		}
		if m.split {
			splits++
			c.queue.widen(slot)
		} else {
			splits = 0
		}
		werr := c.waitRelease(ctx, w, m, splits)
		if werr == nil && !m.split {
			// Waiters of other Clients wake on the same announcement. Where
			// they recently split the vote, spread the attempts out.
			werr = sleep(ctx, c.done, jitter(c.queue.spread(slot)))
		}
		if werr != nil {
			return nil, &opError{msg: err.Error() + ": " + werr.Error(), causes: []error{err, werr}}
		}
	}
}

// sleep waits for d, or returns ctx's error or ErrClosed.
func sleep(ctx context.Context, closed <-chan struct{}, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-closed:
		return ErrClosed
	}
}

// waitRelease sleeps until it is worth trying again after the miss m: a
// random back-off after a split vote; otherwise until the winner's release
// is announced (any release, if there is no single winner) or m.wait passes.
// It returns ctx's error or ErrClosed when it gives up.
func (c *Client) waitRelease(ctx context.Context, w *watch, m *miss, splits int) error {
	var d time.Duration
	switch {
	case m.winner != "" && w.released(m.winner):
		// The winner's release was already announced by some node (perhaps
		// the one that woke us) while others still held its key: they are
		// about to follow. Let them, briefly, then try again.
		d = jitter(SplitBackoff)
	case m.split:
		d = jitter(min(SplitBackoff<<min(splits-1, 16), MaxSplitBackoff))
	case m.wait >= 0:
		d = min(m.wait+time.Millisecond, MaxWakeInterval) // +1 ms: Redis expiry precision
	default:
		d = min(c.cfg.retryDelay+jitter(c.cfg.retryJitter), MaxWakeInterval)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return ErrClosed
		case <-w.signal:
			if m.split {
				continue // the back-off is the point: do not rush back in
			}
			for _, tok := range w.take() {
				if m.winner == "" || tok == m.winner {
					return nil
				}
			}
		}
	}
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(mathrand.Int64N(int64(d)))
}

// keyQueue queues the waiting Lock calls of one Client per key, in FIFO
// order (blocked senders on a Go channel are served first come, first
// served). A key's queue owns its release subscription while anyone waits,
// so a new head finds it confirmed and is not one round trip behind.
type keyQueue struct {
	mu sync.Mutex
	m  map[string]*keySlot
}

type keySlot struct {
	ch   chan struct{} // capacity 1: the head holds it
	refs int           // calls queued or at the head; guarded by keyQueue.mu
	w    *watch        // the subscription, once a head needed it; guarded by keyQueue.mu
	// spreadD is the window over which a woken head delays its attempt: it
	// doubles after a split vote and halves after a win (guarded by
	// keyQueue.mu). Within one Client only the head competes, so it stays 0
	// unless other Clients contend for the key.
	spreadD time.Duration
}

// enter waits for the key's turn; leave must follow.
func (q *keyQueue) enter(ctx context.Context, closed <-chan struct{}, name string) (*keySlot, error) {
	q.mu.Lock()
	if q.m == nil {
		q.m = map[string]*keySlot{}
	}
	s := q.m[name]
	if s == nil {
		s = &keySlot{ch: make(chan struct{}, 1)}
		q.m[name] = s
	}
	s.refs++
	q.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
		return s, nil
	case <-ctx.Done():
		q.drop(name, s)
		return nil, ctx.Err()
	case <-closed:
		q.drop(name, s)
		return nil, ErrClosed
	}
}

// leave ends the head's turn.
func (q *keyQueue) leave(name string, s *keySlot) {
	<-s.ch
	q.drop(name, s)
}

// drop removes one call; the last one closes the subscription.
func (q *keyQueue) drop(name string, s *keySlot) {
	q.mu.Lock()
	s.refs--
	var w *watch
	if s.refs == 0 {
		delete(q.m, name)
		w, s.w = s.w, nil
	}
	q.mu.Unlock()
	if w != nil {
		w.close()
	}
}

func (q *keyQueue) spread(s *keySlot) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	return s.spreadD
}

func (q *keyQueue) widen(s *keySlot) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s.spreadD = min(max(2*s.spreadD, SplitBackoff), MaxSplitBackoff)
}

func (q *keyQueue) narrow(s *keySlot) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s.spreadD /= 2; s.spreadD < SplitBackoff/4 {
		s.spreadD = 0
	}
}

// watch returns the slot's subscription, subscribing on first use.
func (q *keyQueue) watch(s *keySlot, h *hub, channel string) *watch {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s.w == nil {
		s.w = h.subscribe(channel)
	}
	return s.w
}

// holders records, per Redis key, the lock this Client currently holds
// there, so that its own waiters can defer to other Clients' (see Lock).
type holders struct {
	mu      sync.Mutex
	m       map[string]*Lock
	sweepAt int // prune expired entries when the map grows past this
}

func (h *holders) get(name string) *Lock {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[name]
}

func (h *holders) set(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]*Lock{}
	}
	h.m[l.name] = l
	// Locks left to expire are never forgotten by Unlock: prune them,
	// amortised over the insertions.
	if len(h.m) > max(h.sweepAt, 64) {
		now := time.Now()
		for name, o := range h.m {
			if !now.Before(o.Until()) {
				delete(h.m, name)
			}
		}
		h.sweepAt = 2 * len(h.m)
	}
}

// forget removes l if it is still the recorded holder.
func (h *holders) forget(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m[l.name] == l {
		delete(h.m, l.name)
	}
}
