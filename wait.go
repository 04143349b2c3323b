package redlock

import (
	"context"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Waiting for a held lock. Lock does not poll: waiting calls queue on the
// nodes (scripts/queue.lua); after a failed attempt a call subscribes to the
// key's release channel (wake.go), tries once more (so a release between the
// attempt and the subscription is not missed), then sleeps until a release
// names it as the next waiter, or until the holder's keys must have expired,
// whichever comes first. docs/design.md ("Waiting") has the whole scheme.

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

	// MaxHandoffsInClient is how many times in a row a Client hands a lock
	// from one of its Lock calls to the next while other Clients wait, each
	// call at most once (calls that were queued when the streak began).
	// Such a handoff is one script run per node (the release hands the key
	// to the next call, which usually need not wait for the answers;
	// handoff.go) instead of two round trips (a release, then the named
	// waiter's attempt), and no process switch; the bound keeps other
	// Clients' waiters from waiting more than that many handoffs per
	// Client ahead of them. Since each call takes part at most once per
	// streak, every waiter still gets its turn within a round of all the
	// calls queued; a longer streak means fewer handoffs between Clients.
	// 16 rather than 8 measured better on every figure of the 4-process
	// benchmark (docs/benchmarks.md): rate, p50, p99 and longest wait.
	MaxHandoffsInClient = 16
)

// WaitersKeySuffix and WaitExpiryKeySuffix are appended to a lock's Redis
// key (prefix + key) to name the two sorted sets that hold, on each node, its
// queue of waiting Lock calls: their ranks and when each entry expires.
// TryLock and Lock refuse keys ending in them.
const (
	WaitersKeySuffix    = ":waiters"
	WaitExpiryKeySuffix = ":waiters:expiry"
)

func waitersKey(name string) string    { return name + WaitersKeySuffix }
func waitExpiryKey(name string) string { return name + WaitExpiryKeySuffix }

// waiter is a waiting Lock call's place in the nodes' queues of waiters
// (scripts/queue.lua). Every attempt of the call registers it, with the same
// id and rank, on the nodes that refuse it; a node grants a free key only to
// its first live waiter. Ranking by the time the call began makes the
// waiters of all Clients agree on who goes next (ties broken by id), so a
// release does not wake a split vote, and it serves them in the order they
// came, whichever Client they belong to. Ranks come from each Client's wall
// clock: a Client whose clock is behind gets ahead of its turn (fairness, not
// safety, depends on the clocks).
type waiter struct {
	id   string        // random; names the call's entries
	rank int64         // when the call began, in µs since the Unix epoch (exact in a sorted set's double)
	ttl  time.Duration // the TTL the call asks for
	turn chan struct{} // closed when the call becomes the head of its Client's queue for the key
	kick chan struct{} // buffered 1: the lock it waits behind (behind) is being released by this Client

	// Set when the previous head registered this call behind itself in the
	// nodes' queues (guarded by keyQueue.mu): lined holds the fan-outs that
	// did (its attempts, the release that handed it the lock) and may not
	// have run on every node yet, since the call's leave must run after
	// each of them; behind is what to wait for if that head got the lock.
	lined  []*fanout
	behind *miss
	// gone is set (guarded by keyQueue.mu) when the call left its
	// Client's queue: a head that registered it after that leaves the
	// nodes' queues for it (see line), and no Unlock hands it a lock
	// (kick).
	gone bool
	// handoff is the lock this Client's Unlock handed to the call, until
	// the call takes it (guarded by keyQueue.mu; see kick).
	handoff *handoff
}

// newWaiter returns a call's place, its id made of the Client's prefix and
// a random part.
func newWaiter(prefix string, now time.Time, ttl time.Duration) *waiter {
	return &waiter{id: fmt.Sprintf("%s%08x", prefix, mathrand.Uint32()), rank: now.UnixMicro(), ttl: ttl,
		turn: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// ident is w's id, "" for TryLock (w == nil).
func (w *waiter) ident() string {
	if w == nil {
		return ""
	}
	return w.id
}

// args returns the acquire scripts' queue arguments for an attempt whose
// per-node timeout is timeout: the id and rank ("" and 0 for TryLock, which
// never registers) and the grace in ms an entry lives beyond the waiter's
// longest sleep, which covers its next attempt: a split vote's back-off, and
// up to two per-node timeouts (subscribing, then the attempt itself).
func (w *waiter) args(timeout time.Duration) (id string, rank int64, grace int64) {
	grace = (2*timeout + MaxSplitBackoff).Milliseconds()
	if w == nil {
		return "", 0, grace
	}
	return w.id, w.rank, grace
}

// place returns the id and rank of w for registration behind another call
// ("" and 0 if w is nil).
func (w *waiter) place() (string, int64) {
	if w == nil {
		return "", 0
	}
	return w.id, w.rank
}

// miss is what a failed attempt tells the waiting logic.
type miss struct {
	// wait is the earliest time after which a quorum of nodes may be free:
	// the quorum-th smallest of the remaining TTLs (0 for a node that
	// granted us; for a node that keeps the key for a waiter ranked before
	// us, that waiter's entry's remaining life). -1 means unknown (too few
	// answers, or keys without TTL).
	wait time.Duration
	// winner is a token that refused us on a quorum of nodes: another
	// client holds the lock, and only its release (or a later one) is worth
	// waking for.
	winner string
	// split reports that we were granted some nodes but no quorum, and no
	// other token holds a quorum either: contenders split the vote.
	split bool
	acq   *fanout // the attempt's acquire, which later releases must not overtake
	token string  // the attempt's token
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
			if holders[r.holder] >= q && r.holder != "" {
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
// Waiting costs no polling. Waiting Lock calls queue on the nodes, ranked by
// when each call began, whichever Client made it, and a node keeps a free key
// for its first waiter: the lock passes in the order the calls came (given
// roughly synchronised Client clocks; ties go by a random id). Lock
// subscribes to the key's release channel on every node, tries again, and
// then sleeps until a release is announced that names it as the next waiter
// — typically it resumes within a round trip of the release — or until the
// holder's TTL must have run out (a holder that crashed), at most
// MaxWakeInterval. A waiter that crashed holds the others up for at most
// about MaxWakeInterval. When contenders still split the vote (the nodes'
// queues can disagree after a restart or a lost reply) it backs off for a
// random, growing time (SplitBackoff). Calls of one Client waiting for the
// same key also queue locally, in FIFO order, so only the head of each
// Client's queue takes part in the nodes' queue; handoffs between Clients
// always go through the nodes. Each attempt is a TryLock with a fresh token.
// TryLock does not queue, and is refused while a free key is kept for a
// waiting Lock.
//
// When ctx ends it returns an error matching ErrNotObtained and ctx.Err(),
// carrying the last attempt's outcome; it leaves nothing subscribed and
// removes its place in the nodes' queues (nodes it cannot reach drop it when
// it expires).
func (c *Client) Lock(ctx context.Context, key string, ttl time.Duration) (*Lock, error) {
	if err := c.checkLockArgs("Lock", ctx, key, ttl); err != nil {
		return nil, err
	}
	ttl = wireTTL(ttl)
	name := c.cfg.keyPrefix + key
	wt := newWaiter(c.wid, c.cfg.clock.Now(), ttl) // ranked by when the call began, also against other Clients
	slot, err := c.queue.enter(ctx, c.done, name, wt)
	if err != nil {
		c.leaveQueues(ctx, name, wt, nil, nil, ttl) // registered behind a head that has gone on
		c.dropHandoff(name, c.queue.takeHandoff(wt))
		return nil, fmt.Errorf("%w: %q: waiting behind other Lock calls of this Client: %w", ErrNotObtained, key, err)
	}
	defer func() {
		c.queue.leave(name, slot, wt)
		c.dropHandoff(name, c.queue.takeHandoff(wt)) // handed over after our last look
	}()

	// The local queue's subscription, shared by its successive heads: a
	// head that finds it need not subscribe (and try again) after its first
	// miss.
	w := c.queue.subscribed(slot)
	// A head that got the lock may have registered us behind it in the
	// nodes' queues: then we wait for its release, named next like any
	// other waiter, without an attempt of our own.
	m := c.queue.behind(wt)
	splits := 0
	kicked := false   // made heir by this Client's Unlock (errKicked)
	var own []*fanout // our missed attempts that may not have run everywhere (leaveQueues)
	for {
		if m != nil && w != nil {
			werr := c.waitRelease(ctx, slot, w, wt, m, splits)
			if kicked = werr == errKicked; werr != nil && !kicked {
				c.leaveQueues(ctx, name, wt, m, own, ttl)
				return nil, fmt.Errorf("%w: %q: %w", ErrNotObtained, key, werr)
			}
		}
		if w != nil {
			// The attempt sees the effect of what was announced so far.
			c.queue.heard(slot, c.wid, w.take())
		}
		select {
		case <-wt.kick: // likewise
		default:
		}
		// While we wait anyway, our attempts register the next call of our
		// queue behind us on the nodes, sparing it an attempt of its own;
		// a lock handed to us (handoff.go) did so already.
		var next *waiter
		var l *Lock
		var mm *miss
		if h := c.queue.takeHandoff(wt); h != nil && h.token != "" {
			next = h.next
			l, mm, err = c.inherit(ctx, key, wt, h)
		} else {
			if w != nil {
				next = c.queue.next(slot)
			}
			l, mm, err = c.attempt(ctx, key, ttl, wt, next)
		}
		m = mm
		if m != nil && m.acq != nil {
			own = pending(own, m.acq)
		}
		if next != nil {
			var acq *fanout
			var behind *miss
			if err == nil {
				acq, behind = l.acq, &miss{winner: l.token, wait: min(ttl, MaxWakeInterval), acq: l.acq}
			} else if m != nil {
				acq = m.acq
			}
			if acq != nil && !c.queue.line(next, acq, behind) {
				// next gave up while our attempt registered it.
				go c.leaveQueue(ctx, name, next, &miss{acq: acq}, ttl)
			}
		}
		if err == nil {
			return l, nil
		}
		if cerr := ctx.Err(); cerr != nil || errors.Is(err, ErrClosed) {
			c.leaveQueues(ctx, name, wt, m, own, ttl)
			if cerr != nil && !errors.Is(err, cerr) {
				// ctx ended after the attempt's error was made: it must
				// still match ctx's error, as documented.
				err = &opError{msg: err.Error() + ": " + cerr.Error(), causes: []error{err, cerr}}
			}
			return nil, err
		}
		if w == nil {
			// Subscribe, then try again at once: a release between the
			// attempt and the subscription is not missed. A release
			// announced on a quorum of nodes reaches one of ours once a
			// quorum confirmed; a node that does not confirm in time only
			// costs the timer.
			w = c.queue.watch(slot, c.hub, releaseChannel(name))
			w.awaitConfirmed(ctx, quorum(len(c.nodes)), c.cfg.nodeTimeoutFor(ttl))
			m = nil
			continue
		}
		if kicked {
			// As heir we tried right behind the release, but too few nodes
			// had run it (its command went another way, on a new
			// connection): nothing will be announced for that release, so
			// try again after a short random back-off, as after a split
			// vote. The nodes keep us first for our grace meanwhile.
			m.split = true
		}
		if m.split {
			splits++
		} else {
			splits = 0
		}
		werr := c.waitRelease(ctx, slot, w, wt, m, splits)
		if kicked = werr == errKicked; werr != nil && !kicked {
			c.leaveQueues(ctx, name, wt, m, own, ttl)
			return nil, &opError{msg: err.Error() + ": " + werr.Error(), causes: []error{err, werr}}
		}
		m = nil
	}
}

// leaveQueues removes the Lock call w, which gives up, from the nodes'
// queues, behind its last attempt m (leaveQueue) and, in the background,
// behind every other fan-out that may have registered it there and not run
// on every node yet: its earlier attempts (own) and those of the calls
// ahead of it (keyQueue.line). Each leave runs on a node after the command
// it follows, so no registration lands after the call has left. Without m
// (the call never attempted), the last registration of the calls ahead of
// it takes m's place.
func (c *Client) leaveQueues(ctx context.Context, name string, w *waiter, m *miss, own []*fanout, ttl time.Duration) {
	fs := append(slices.Clone(own), c.queue.linedOf(w)...)
	if m == nil || m.acq == nil {
		if len(fs) == 0 {
			return
		}
		m, fs = &miss{acq: fs[len(fs)-1]}, fs[:len(fs)-1]
	}
	for _, f := range fs {
		if f != m.acq && !f.allDone() {
			go c.leaveQueue(ctx, name, w, &miss{acq: f}, ttl)
		}
	}
	c.leaveQueue(ctx, name, w, m, ttl)
}

// leaveQueue removes the Lock call w, which gives up, from the nodes' queues
// of waiters, where its last attempt (m) may have registered it: on a free
// key kept for it, the next waiter then need not wait for its entries to
// expire. It waits only for the nodes that answered that attempt, like the
// cleanup of a miss; the others drop the entry within their timeouts, or let
// it expire.
func (c *Client) leaveQueue(ctx context.Context, name string, w *waiter, m *miss, ttl time.Duration) {
	if m == nil || m.acq == nil || c.begin() != nil {
		return // no attempt registered it, or the Client is closed: the entries expire
	}
	defer c.wg.Done()
	rel := c.release(context.WithoutCancel(ctx), m.acq, name, m.token, w.id, nil, c.cfg.nodeTimeoutFor(ttl))
	rel.awaitAnswered(m.acq, answered)
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

// waitRelease sleeps until it is worth that the waiter wt tries again after
// the miss m: a random back-off after a split vote; otherwise until a
// release is announced that names wt as the next waiter (or names nobody:
// the key is free for anyone), until this Client's Unlock makes wt the
// heir of the lock it waits behind (errKicked), or until m.wait passes. The release that wakes us is then
// awaited from a quorum of nodes, so that we do not try while some still
// hold the released key; nodes that do not announce it (failed, or never
// granted it) cost at most SplitBackoff. It returns ctx's error or ErrClosed
// when it gives up.
func (c *Client) waitRelease(ctx context.Context, slot *keySlot, w *watch, wt *waiter, m *miss, splits int) error {
	var d time.Duration
	switch {
	case m.split:
		d = jitter(min(SplitBackoff<<min(splits-1, 16), MaxSplitBackoff))
	case m.wait >= 0:
		d = min(m.wait+time.Millisecond, MaxWakeInterval) // +1 ms: Redis expiry precision
	default:
		d = min(c.cfg.retryDelay+jitter(c.cfg.retryJitter), MaxWakeInterval)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	if m.split {
		// The back-off is the point: do not rush back in on an announcement.
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return ErrClosed
		}
	}
	q := quorum(len(c.nodes))
	var wake string // the release that wakes us, once announced
	var settled <-chan time.Time
	for {
		if wake != "" {
			if w.released(wake) >= q {
				return nil
			}
			if settled == nil {
				st := time.NewTimer(SplitBackoff)
				defer st.Stop()
				settled = st.C
			}
		}
		select {
		case <-t.C:
			return nil
		case <-settled:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return ErrClosed
		case <-wt.kick:
			// This Client's Unlock of the lock we wait behind has queued
			// its releases on the pipelined connections: our attempt,
			// queued behind them, reaches every node after the release.
			return errKicked
		case <-w.signal:
			notices := w.take()
			c.queue.heard(slot, c.wid, notices)
			for _, a := range notices {
				if wake == "" && (a.next == "" || a.next == wt.id) {
					wake = a.token
				}
			}
		}
	}
}

// errKicked is waitRelease's answer when this Client's Unlock made the waiter
// its heir: try at once.
var errKicked = errors.New("redlock: kicked by this Client's release")

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(mathrand.Int64N(int64(d)))
}

// keyQueue queues the waiting Lock calls of one Client per key, in FIFO
// order. A key's queue owns its release subscription while anyone waits,
// so a new head finds it confirmed and is not one round trip behind.
type keyQueue struct {
	mu sync.Mutex
	m  map[string]*keySlot
}

type keySlot struct {
	line []*waiter // the calls waiting for the key, the head first; guarded by keyQueue.mu
	w    *watch    // the subscription, once a head needed it; guarded by keyQueue.mu
	// othersAt is when an announcement last named a waiter of another
	// Client, or a release said one is queued, streak how many heirs in a
	// row this Client has had since, and
	// streakTo the rank of the last call queued when the streak began
	// (guarded by keyQueue.mu; see heir).
	othersAt time.Time
	streak   int
	streakTo int64
}

// enter queues the call wt and waits for its turn; leave must follow. When
// it gives up, it has left; the caller then leaves the nodes' queues, where
// its head may have registered it (leaveQueues).
func (q *keyQueue) enter(ctx context.Context, closed <-chan struct{}, name string, wt *waiter) (*keySlot, error) {
	q.mu.Lock()
	if q.m == nil {
		q.m = map[string]*keySlot{}
	}
	s := q.m[name]
	if s == nil {
		s = &keySlot{}
		q.m[name] = s
	}
	if len(s.line) > 0 {
		// Ranks must grow along the line: a call registered behind the
		// head (queue_behind) must never rank before it on the nodes, or
		// the nodes would keep the key for a call that waits for the head.
		wt.rank = max(wt.rank, s.line[len(s.line)-1].rank+1)
	}
	s.line = append(s.line, wt)
	if len(s.line) == 1 {
		close(wt.turn)
	}
	q.mu.Unlock()
	var err error
	select {
	case <-wt.turn:
		return s, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-closed:
		err = ErrClosed
	}
	q.leave(name, s, wt)
	return nil, err
}

// leave removes wt from the key's queue, handing the turn on if it was the
// head; the last one closes the subscription. A lock handed to wt before
// is left for takeHandoff; none is handed after.
func (q *keyQueue) leave(name string, s *keySlot, wt *waiter) {
	q.mu.Lock()
	wt.gone = true
	for i, o := range s.line {
		if o == wt {
			s.line = append(s.line[:i], s.line[i+1:]...)
			if i == 0 && len(s.line) > 0 {
				close(s.line[0].turn)
			}
			break
		}
	}
	var w *watch
	if len(s.line) == 0 {
		delete(q.m, name)
		w, s.w = s.w, nil
	}
	q.mu.Unlock()
	if w != nil {
		w.close()
	}
}

// next returns the call after the head, or nil.
func (q *keyQueue) next(s *keySlot) *waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(s.line) > 1 {
		return s.line[1]
	}
	return nil
}

// line records that the acquire acq registered wt behind its head; behind,
// if not nil, is what wt waits for when its turn comes (the head got the
// lock). It reports false if wt gave up before that: then nobody else
// removes the entries acq made for it.
func (q *keyQueue) line(wt *waiter, acq *fanout, behind *miss) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	wt.lined, wt.behind = pending(wt.lined, acq), behind
	return !wt.gone
}

// pending returns fs without the fan-outs that have finished on every node
// (what they registered there is in place, or never will be), with f added.
func pending(fs []*fanout, f *fanout) []*fanout {
	out := fs[:0]
	for _, g := range fs {
		if g != f && !g.allDone() {
			out = append(out, g)
		}
	}
	return append(out, f)
}

// linedOf returns the fan-outs that registered wt behind its head and may not
// have run everywhere yet.
func (q *keyQueue) linedOf(wt *waiter) []*fanout {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(wt.lined)
}

// heir returns the handoff of the lock whose token is about to be released
// (handoff.go) to the head of name's queue, if the head waits behind that
// lock and may inherit it, or nil: the release then hands the head the key
// ahead of the nodes' queues, and kick tells it. While other Clients wait (an announcement
// named one of their waiters, or a release said one is queued, within
// othersWindow), at most
// MaxHandoffsInClient heirs in a row, and only calls that were queued when
// the streak began (a call that comes back for the lock does not lap
// others' waiters): then the release goes to the queue's order.
func (q *keyQueue) heir(name, token string, direct bool, now time.Time, n int) *handoff {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.m[name]
	if s == nil || len(s.line) == 0 {
		return nil
	}
	h := s.line[0]
	if h.behind == nil || h.behind.winner != token {
		return nil
	}
	if time.Since(s.othersAt) <= othersWindow {
		if s.streak == 0 {
			s.streakTo = s.line[len(s.line)-1].rank
		}
		if s.streak >= MaxHandoffsInClient || h.rank > s.streakTo {
			s.streak = 0
			return nil
		}
		s.streak++
	}
	var next *waiter
	if len(s.line) > 1 {
		next = s.line[1]
	}
	return newHandoff(h, next, direct, now, n)
}

// kick gives the heir of h the lock handed over, once the release is queued
// on the nodes' connections (an heir that makes its own attempt queues it
// right behind), and wakes it. It reports false if the heir has left its
// queue meanwhile: then nobody else releases what was handed to it.
func (q *keyQueue) kick(h *handoff) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if h.heir.gone || h.heir.handoff != nil { // gone, or handed another lock it has not taken yet
		return false
	}
	h.heir.handoff = h
	select {
	case h.heir.kick <- struct{}{}:
	default:
	}
	return true
}

// lineOnly records that acq registered wt behind its head, as line does,
// leaving what wt waits for unchanged; it reports false if wt has left its
// queue.
func (q *keyQueue) lineOnly(wt *waiter, acq *fanout) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	wt.lined = pending(wt.lined, acq)
	return !wt.gone
}

// takeHandoff returns the lock handed to wt, if any, which wt now owns.
func (q *keyQueue) takeHandoff(wt *waiter) *handoff {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := wt.handoff
	wt.handoff = nil
	return h
}

// othersWindow is how long after another Client's waiter was named this
// Client counts as competing with others for the key (see heir).
const othersWindow = time.Second

// heard records, from announcements, whether waiters of other Clients wait:
// named next, or behind the next one, with ids of another prefix.
func (q *keyQueue) heard(s *keySlot, prefix string, notices []notice) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, n := range notices {
		if (n.next != "" && !strings.HasPrefix(n.next, prefix)) || (n.other != "" && !strings.HasPrefix(n.other, prefix)) {
			s.othersAt = time.Now()
		}
	}
}

// othersWait records that waiters of other Clients are queued for name on
// the nodes (a release said so).
func (q *keyQueue) othersWait(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.m[name]; s != nil {
		s.othersAt = time.Now()
	}
}

// behind returns what the head wt waits for before its first attempt, or nil.
func (q *keyQueue) behind(wt *waiter) *miss {
	q.mu.Lock()
	defer q.mu.Unlock()
	return wt.behind
}

// subscribed returns the slot's subscription, or nil if it has none yet.
func (q *keyQueue) subscribed(s *keySlot) *watch {
	q.mu.Lock()
	defer q.mu.Unlock()
	return s.w
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
