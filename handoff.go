package redlock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Handing a lock over inside a Client. When this Client's Unlock releases a
// lock that the head of the Client's queue for the key waits behind
// (keyQueue.heir), the release hands the key to that call directly: on each
// node where it deletes our key, the release script sets the key to a token
// minted for the heir, with the heir's TTL, and registers the call waiting
// behind the heir. The heir then makes no attempt of its own: its votes are
// the release's replies ("handed over"), and its validity counts from when
// the release was sent, as an attempt's counts from when the acquire was
// sent, so it never exceeds what the nodes grant: one script run per node
// and no attempt of the heir's own. While the released lock's validity
// still covers at least half of what the heir asks for, the heir does not
// even wait for the release's round trip: it holds the lock at once, on
// what the nodes keep in any case (see inherit), and the nodes' answer only
// raises its Until, or ends it as lost.
//
// Every handed token is used or released: the heir uses it (inherit) or
// releases it (a quorum was not reached, validity ran out, its context
// ended); an heir that left its queue before it was told (kick refused)
// leaves the release to Unlock, and one that left after it was told drops
// it (dropHandoff).
//
// With fencing the handoff only keeps the key for the heir (token ""),
// which makes its own attempt: the fencing counter advances in the acquire
// script only.

// handoff is one lock handed from an Unlock to the next Lock call of the
// same Client.
type handoff struct {
	heir  *waiter
	next  *waiter   // the call after the heir, registered behind it by the release; or nil
	token string    // the heir's token; "" to only keep the key for the heir
	start time.Time // taken before the release was sent: the heir's validity counts from here
	prev  time.Time // the released lock's Until (how long the nodes keep the key at least); zero if it is known lost

	f    *fanout       // the release; set before the heir is told (kick)
	done chan struct{} // closed once the heir's outcome is decided

	mu    sync.Mutex
	seen  []vote // the heir's votes as they arrive (guarded by mu)
	t     tally  // their count (guarded by mu)
	votes []vote // the heir's votes when decided, and
	final tally  // their count: both set before done is closed
	lock  *Lock  // the heir's lock if taken before the decision (guarded by mu; see confirm)
	ended bool   // lock was ended as lost (guarded by mu)
}

// newHandoff returns the handoff of a lock to heir, with next waiting behind
// it, for a release about to be sent; direct mints the heir's token.
func newHandoff(heir, next *waiter, direct bool, now time.Time, n int) *handoff {
	h := &handoff{heir: heir, next: next, start: now, done: make(chan struct{}), seen: make([]vote, n), t: tally{n: n}}
	if direct {
		if tok, err := newToken(); err == nil { // else: the heir makes its own attempt
			h.token = tok
		}
	}
	return h
}

// args returns the release script's heir arguments (release.lua).
func (h *handoff) args() (heirID, token string, ms int64, nextID string, nextRank int64) {
	if h == nil {
		return "", "", 0, "", 0
	}
	if h.token == "" {
		return h.heir.id, "", 0, "", 0 // the heir's own attempt registers next
	}
	nextID, nextRank = h.next.place()
	return h.heir.id, h.token, h.heir.ttl.Milliseconds(), nextID, nextRank
}

// arrive records the release's result r on node i for the heir: yes where
// the node handed the key over, no where it did not. Once the heir's
// outcome is decided, it tells the heir. The fan-out calls it as each
// result arrives, on whatever goroutine finishes the node (often a
// connection's reader), so the heir wakes without waiting for the
// releasing goroutine; it must not block.
func (h *handoff) arrive(i int, r result) {
	v := r.vote
	if v == voteYes && r.val < handedOver {
		v = voteNo
	}
	h.mu.Lock()
	h.seen[i] = v
	h.t.add(v)
	if h.votes == nil && h.t.decided() {
		h.votes, h.final = slices.Clone(h.seen), h.t
		close(h.done)
	} else if h.votes == nil || !h.t.refusedByQuorum() {
		h.mu.Unlock()
		return
	}
	// Decided now, or refused by a quorum after a decision that was only
	// "a quorum can no longer hand it over": an early heir's lock must end
	// as lost then too.
	l, t, votes := h.lock, h.t, slices.Clone(h.seen)
	h.mu.Unlock()
	if l != nil {
		l.c.confirm(l, h, t, votes)
	}
}

// adopt records that the heir took the lock l before the decision; if the
// decision is already in, it applies it at once (confirm).
func (h *handoff) adopt(l *Lock) {
	h.mu.Lock()
	h.lock = l
	decided, t, votes := h.votes != nil, h.t, slices.Clone(h.seen)
	h.mu.Unlock()
	if decided {
		l.c.confirm(l, h, t, votes)
	}
}

// tally returns the count of the heir's votes; call after done.
func (h *handoff) tally() tally { return h.final }

// inherit is the heir wt's side of the handoff h (h.token set).
//
// While the released lock's validity (h.prev) still covers at least half
// the validity wt asks for, wt holds the lock at once, before the nodes
// have answered: until the release lands, the nodes keep the key under the
// released lock's token at least until h.prev, after it under the heir's at
// least until h.start + ttl, and every later operation of the heir's is
// ordered behind the release on each node. Its Until is the earlier of the
// two (less the drift allowance) until the nodes confirm the handoff (then
// it is raised as by a successful attempt sent when the release was); if a
// quorum reports that the released
// lock was no longer held, the heir's lock ends as lost (confirm). This
// takes the round trip out of a handoff within a Client, under the same
// assumption every Redlock holder relies on: keys live until their TTL.
//
// Otherwise, once the outcome is decided (handoff.arrive), wt holds the lock
// if a quorum handed it over, validity remains, and ctx has not ended. If
// not, it releases the handed token on every node (behind the release) and
// returns a miss that backs off briefly, as after a split vote: the heir
// stays queued where the release did not reach.
func (c *Client) inherit(ctx context.Context, key string, wt *waiter, h *handoff) (*Lock, *miss, error) {
	if err := c.begin(); err != nil {
		<-h.done
		return nil, nil, fmt.Errorf("%w: %w", ErrNotObtained, err) // the handed keys expire
	}
	defer c.wg.Done()
	name, ttl := c.cfg.keyPrefix+key, wt.ttl
	d := drift(ttl, c.cfg.driftFactor)
	// Before the release lands a node keeps the released key until h.prev at
	// least, after it the heir's key until h.start + ttl at least.
	early := h.start.Add(ttl - d)
	if h.prev.Before(early) {
		early = h.prev
	}
	if now := c.cfg.clock.Now(); ctx.Err() == nil && early.Sub(now) >= (ttl-d)/2 && !h.decided() {
		l := &Lock{c: c, key: key, name: name, token: h.token, waiter: wt.id, ttl: ttl, acq: h.f, start: h.start, until: early}
		if f := c.cfg.obs.Acquire; f != nil {
			f(AcquireEvent{Key: key, TTL: ttl, Outcome: OutcomeOK, Elapsed: now.Sub(h.start), Validity: early.Sub(now), Nodes: c.nodeVotes(h.f, make([]vote, len(c.nodes)))})
		}
		h.adopt(l)
		return l, nil, nil
	}
	<-h.done // every node's release ends within its per-node timeout
	t := h.tally()
	elapsed := c.cfg.clock.Now().Sub(h.start)
	v := validity(ttl, elapsed, d)
	if t.reached() && v > 0 && ctx.Err() == nil {
		l := &Lock{c: c, key: key, name: name, token: h.token, waiter: wt.id, ttl: ttl, acq: h.f, start: h.start, until: h.start.Add(ttl - d)}
		if f := c.cfg.obs.Acquire; f != nil {
			f(AcquireEvent{Key: key, TTL: ttl, Outcome: OutcomeOK, Elapsed: elapsed, Validity: v, Nodes: c.nodeVotes(h.f, h.votes)})
		}
		return l, nil, nil
	}
	rel := c.release(context.WithoutCancel(ctx), h.f, name, h.token, "", nil, c.cfg.nodeTimeoutFor(ttl))
	rel.awaitAnswered(h.f, answered)

	kinds := []error{ErrNotObtained}
	what := "lock not obtained: handed over by this Client's Unlock on too few nodes"
	switch {
	case ctx.Err() != nil:
		what = "lock not obtained: the Lock call ended while the lock was handed over to it"
	case t.reached():
		what = fmt.Sprintf("lock not obtained: handed over after %v, leaving no validity of ttl %v", elapsed.Round(time.Microsecond), ttl)
	case t.unreachable():
		kinds = append(kinds, ErrQuorumUnreachable)
		what = "lock not obtained: quorum unreachable while this Client's Unlock handed the lock over"
	}
	err := newOpError(ctx, what, key, kinds, t, h.f.failures(h.votes))
	if f := c.cfg.obs.Acquire; f != nil {
		ev := AcquireEvent{Key: key, TTL: ttl, Outcome: outcomeOf(ctx, err), Elapsed: elapsed, Nodes: c.nodeVotes(h.f, h.votes), Err: err}
		if t.reached() {
			ev.Validity = v
		}
		f(ev)
	}
	return nil, &miss{wait: -1, split: true, acq: rel, token: h.token}, err
}

// confirm applies the handoff h's answers so far (t, votes) to the lock l
// that its heir took before they were in (see inherit): a quorum handed it
// over, so Until is raised as after an attempt sent with the release; or a
// quorum refused (the released lock was no longer held), so l is lost. Too
// few answers leave Until where it is. It may run on a connection's reader
// (arrive): it does not block. It marks a lost lock at once (an Unlock of
// l then hands no heir its validity, Extend refuses) and ends it
// (observers, Do's hook) on a goroutine of its own, counted in c.wg (the
// caller is counted there: a fan-out's node that is finishing, or inherit).
func (c *Client) confirm(l *Lock, h *handoff, t tally, votes []vote) {
	switch {
	case t.refusedByQuorum():
		h.mu.Lock()
		first := !h.ended
		h.ended = true
		h.mu.Unlock()
		if !first {
			return
		}
		err := newOpError(context.Background(), "lock lost: handed over by this Client's Unlock, but a quorum no longer held the released lock", l.key, []error{ErrLockLost}, t, h.f.failures(votes))
		l.mu.Lock()
		if l.lost == nil {
			l.lost = err
		}
		l.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			l.finish(err, true)
		}()
	case t.reached():
		up := h.start.Add(l.ttl - drift(l.ttl, c.cfg.driftFactor))
		l.mu.Lock()
		if l.lost == nil && up.After(l.until) {
			l.until = up
		}
		l.mu.Unlock()
	}
}

// decided reports whether the heir's outcome is known.
func (h *handoff) decided() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// dropHandoff releases, in the background, the token handed over by h to a
// Lock call that left its queue without using it (nil or a keep-only h: no
// token was handed).
func (c *Client) dropHandoff(name string, h *handoff) {
	if h == nil || h.token == "" || c.begin() != nil {
		return // the Client is closed: the handed keys expire
	}
	go func() {
		defer c.wg.Done()
		c.unhand(context.Background(), name, h)
	}()
}

// unhand releases the token handed over by h, which its heir will not use,
// once the heir's outcome is decided, and leaves the call that the release
// registered behind the heir to leave the nodes' queues itself when it gives
// up (or leaves them for it, if it has already).
func (c *Client) unhand(ctx context.Context, name string, h *handoff) {
	<-h.done
	timeout := c.cfg.nodeTimeoutFor(h.heir.ttl)
	if h.next != nil && !c.queue.lineOnly(h.next, h.f) {
		c.leaveQueue(ctx, name, h.next, &miss{acq: h.f}, h.next.ttl)
	}
	rel := c.release(ctx, h.f, name, h.token, "", nil, timeout)
	rel.awaitAnswered(h.f, answered)
}
