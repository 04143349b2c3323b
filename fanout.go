package redlock

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the fan-out of one operation to every node (step 2 of the
// algorithm) and the bookkeeping of the answers as they arrive.
//
// A node's command normally goes out without a goroutine of its own: the
// fan-out queues it on the node's pipelined connection, whose reader hands
// the reply back to the fan-out (slot.complete). The per-node timeout is the
// command's deadline on that connection (pipe.go's reader fails the
// connection at the earliest deadline), so no timer or context is needed per
// node. A node takes the blocking path instead, on a goroutine of its own
// under a per-node timeout context, when the command cannot be queued
// without I/O first: first contact or a restart re-check is due
// (Client.ready), the connection is not up, or the transport is not
// pipelined (WithPipelining(false), test fakes). Both paths end in fanout.finish. An operation that follows
// another on each node (a release after its acquire) starts on a node once
// the prior result is in there, or, if it is a behindOp, at once, queued
// behind the prior command on the same connection.

// result is one node's outcome in a fan-out.
type result struct {
	vote   vote
	val    int64  // script-specific detail, e.g. the holder's PTTL on a refused acquire
	holder string // on a refused acquire, the holder's token ("" if kept for a waiter)
	err    error  // set when vote is voteFail: a *NodeError
}

// nodeTimeoutKey carries the per-node timeout in the context of a node
// operation on the blocking path: the pipelined transport judges a
// connection by it, not by the caller's own deadline, which may be earlier
// (see pipe.call).
type nodeTimeoutKey struct{}

// nodeOp is one operation as every node runs it.
type nodeOp interface {
	// prepare returns the script to run on node i and its complete
	// EVALSHA arguments (script.args), or send false and node i's result
	// when nothing needs to be sent. prior is node i's result in the
	// fan-out this one follows, or nil. It must not block.
	prepare(i int, prior *result) (s *script, args []interface{}, skip result, send bool)
	// parse classifies node i's reply to what prepare sent. It may run on
	// a connection's reader goroutine: it must not block.
	parse(i int, reply interface{}) result
}

// behindOp is a nodeOp that start may send to a node before the result of
// the fan-out it follows is known there, queued right behind that fan-out's
// command on the same connection, which Redis runs in order: its outcome
// does not depend on the prior vote (a release of a key the acquire did not
// get answers 0, the vote that not sending it would give). prepare then
// receives a nil prior.
type behindOp interface {
	nodeOp
	queuesBehind()
}

// watchedOp is a nodeOp that is told of each node's result as it arrives,
// on whatever goroutine finishes the node; arrived must not block.
type watchedOp interface {
	nodeOp
	arrived(i int, r result)
}

// dependentOp is a nodeOp that may be prepared for node i only once other
// fan-outs have settled there (the acquisitions of the locks it extends).
type dependentOp interface {
	nodeOp
	settledOn(i int) bool // whether prepare(i) can run now
	waitOn(i int)         // waits until it can
}

// fanout is one operation in flight on every node. Node i's result is
// written to results[i] (and its round trip to took[i]) exactly once, by
// finish, before i is sent on arrived; a reader that received i, or saw
// the node done under mu, may read them without further synchronisation.
type fanout struct {
	c       *Client
	ctx     context.Context // the caller's; node errors report its end
	op      nodeOp
	timeout time.Duration // per node
	results []result
	took    []time.Duration // each node's round trip, like results; nil without an observer
	t0      time.Time       // when the fan-out started; only with an observer
	slots   []slot
	arrived chan int // node indexes in completion order; buffered to n so no sender ever blocks

	// cancelled is ctx.Done() until next has acted on it; only the
	// fan-out's owner (the goroutine that started it) reads arrived and
	// touches cancelled.
	cancelled <-chan struct{}

	// kept is set by the owner once the fan-out succeeded (an acquire that
	// won the lock): from then on, the end of ctx no longer stops nodes on
	// the blocking path (still in first contact or dialing), which go on
	// under their own timeouts, so that the lock is held on every node
	// that answers in time and not only on the quorum that was first.
	kept atomic.Bool

	undone atomic.Int32 // nodes whose result is not in yet (allDone)

	mu sync.Mutex // guards the slots' state below
}

// slot is one node's part in a fan-out.
type slot struct {
	f *fanout
	i int

	// Guarded by f.mu.
	done      bool
	slow      bool          // on the blocking path: its goroutine finishes it, cancellation does not
	queued    bool          // its command is queued on pipe (possibly already answered)
	wake      chan struct{} // made by a goroutine waiting for this result (wait), closed by finish
	followers *slot         // slots of later fan-outs that start once this result is in (start's after)
	link      *slot         // the next slot in the followers list this slot belongs to

	// For a slot queued behind a prior slot (behindOp): the prior.
	ahead *slot

	// The command queued on a pipelined connection, written before it is
	// queued and read by that connection's reader.
	t0       time.Time // with an observer
	deadline time.Time
	pipe     *pipe
}

// start sends op to every node, each under its own timeout. If after is not
// nil, node i's op starts only once after's result on node i is in, and
// receives it, or (a behindOp) is queued right behind after's command on
// node i's connection: a release must not overtake an acquire still in
// flight on the same node, or the late acquire would leave a key behind.
// Nodes in flight belong to the Client (Close waits for them); each ends
// within its timeouts, so returning early leaks nothing.
//
// If ctx ends, the owner's next (and so collect) finishes every node still
// queued on a connection with ctx's error and returns at once; those
// commands' replies are dropped when they come.
func (c *Client) start(ctx context.Context, timeout time.Duration, after *fanout, op nodeOp) *fanout {
	n := len(c.nodes)
	f := &fanout{
		c: c, ctx: ctx, op: op, timeout: timeout,
		results:   make([]result, n),
		slots:     make([]slot, n),
		arrived:   make(chan int, n),
		cancelled: ctx.Done(),
	}
	f.undone.Store(int32(n))
	if c.cfg.obs.observed() {
		f.took = make([]time.Duration, n)
		f.t0 = c.cfg.clock.Now()
	}
	for i := range f.slots {
		s := &f.slots[i]
		s.f, s.i = f, i
	}
	c.wg.Add(n) // one per node, released by finish
	if ctx.Err() != nil {
		// Nothing is sent for a caller that has already gone.
		f.cancel()
		return f
	}
	for i := range f.slots {
		if after == nil {
			f.slots[i].launch(nil)
		} else {
			after.follow(i, &f.slots[i])
		}
	}
	return f
}

// testHookLaunch, if set (tests only), runs in launch between taking a
// node's connection and checking the node's state.
var testHookLaunch func(i int)

// follow launches s once node i's result in f is in: at once if it is, or,
// for a behindOp, queued behind f's command on node i's connection if it
// is still waiting for its reply there.
func (f *fanout) follow(i int, s *slot) {
	p := &f.slots[i]
	f.mu.Lock()
	if !p.done {
		if _, ok := s.f.op.(behindOp); ok && p.queued && s.queueBehind(p) {
			f.mu.Unlock()
			return
		}
		last := &p.followers
		for *last != nil {
			last = &(*last).link
		}
		*last, s.link = s, nil
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	s.launch(&f.results[i])
}

// queueBehind sends the slot's command on the connection where its prior
// slot p's command awaits a reply, right behind it, and reports whether it
// did; if not (the connection died, the node needs I/O first), the slot
// waits for p's result. The caller holds p.f.mu, so that p cannot finish
// meanwhile.
func (s *slot) queueBehind(p *slot) bool {
	f, i := s.f, s.i
	c, n := f.c, f.c.nodes[i]
	t, piped := n.t.(*pipeTransport)
	if !piped || t.live() != p.pipe {
		return false
	}
	if ready, err := c.readyNow(n); !ready || err != nil {
		return false
	}
	sc, args, _, send := f.op.prepare(i, nil)
	if !send {
		return false
	}
	var t0 time.Time
	if f.took != nil {
		t0 = c.cfg.clock.Now()
	}
	// The slot's command fields are written under its fan-out's mutex: a
	// later fan-out's slot may be reading them (queueBehind, under this
	// mutex) to queue behind this one.
	f.mu.Lock()
	defer f.mu.Unlock()
	s.t0, s.deadline, s.pipe, s.ahead = t0, time.Now().Add(f.timeout), p.pipe, p
	if p.pipe.sendScript(s.deadline, s, sc, args) != nil {
		s.ahead = nil
		return false
	}
	s.queued = true
	return true
}

// launch sends the slot's command: queued on the node's pipelined connection
// when that needs no I/O first, on a goroutine of its own otherwise. It never
// blocks: it may run on a connection's reader (a follower whose prior result
// has just arrived).
func (s *slot) launch(prior *result) {
	f, i := s.f, s.i
	if d, ok := f.op.(dependentOp); ok && !d.settledOn(i) {
		s.goSlow(prior, nil, nil)
		return
	}
	c, n := f.c, f.c.nodes[i]
	var t0 time.Time
	if f.took != nil {
		t0 = c.cfg.clock.Now()
	}
	sc, args, skip, send := f.op.prepare(i, prior)
	if !send {
		f.finish(i, f.classify(i, skip, false), t0, false)
		return
	}
	t, piped := n.t.(*pipeTransport)
	if !piped {
		s.goSlow(prior, sc, args)
		return
	}
	// The connection first, then the node's state: a connection dialled
	// meanwhile (its INFO may have started the restart guard) is installed
	// only after that state is set, so the check below sees it.
	p := t.live()
	if testHookLaunch != nil {
		testHookLaunch(i)
	}
	ready, err := c.readyNow(n)
	switch {
	case !ready:
		s.goSlow(prior, sc, args)
		return
	case err != nil:
		f.finish(i, f.classify(i, result{vote: voteFail, err: err}, false), t0, false)
		return
	}
	if p == nil {
		s.goSlow(prior, sc, args)
		return
	}
	// Under f.mu, so that cancellation either finds the command queued
	// (what follows it on the node goes out behind it) or sees it never sent,
	// and so that a later fan-out's slot reading these fields to queue
	// behind this one (queueBehind) sees them whole.
	f.mu.Lock()
	if s.done { // cancelled meanwhile
		f.mu.Unlock()
		return
	}
	s.t0, s.deadline, s.pipe = t0, time.Now().Add(f.timeout), p
	err = p.sendScript(s.deadline, s, sc, args)
	s.queued = err == nil
	f.mu.Unlock()
	if err != nil { // the connection died since live: the blocking path redials
		s.goSlow(prior, sc, args)
	}
}

// goSlow runs the slot's node on the blocking path: a goroutine with a
// per-node timeout context, which performs first contact (or the restart
// re-check) and dials if needed. sc and args are the prepared command, or
// nil if prepare must still run (after a dependentOp's wait).
func (s *slot) goSlow(prior *result, sc *script, args []interface{}) {
	f, c := s.f, s.f.c
	f.mu.Lock()
	if s.done { // cancelled while waiting for its prior
		f.mu.Unlock()
		return
	}
	s.slow = true
	f.mu.Unlock()
	c.wg.Add(1) // the goroutine, which may outlive the slot's own count
	go func() {
		defer c.wg.Done()
		if sc == nil {
			if d, ok := f.op.(dependentOp); ok {
				d.waitOn(s.i)
			}
		}
		// The caller's cancellation stops the node unless the fan-out has
		// succeeded by then (kept).
		nctx, cancel := context.WithTimeout(context.WithValue(context.WithoutCancel(f.ctx), nodeTimeoutKey{}, f.timeout), f.timeout)
		defer cancel()
		stop := context.AfterFunc(f.ctx, func() {
			if !f.kept.Load() {
				cancel()
			}
		})
		defer stop()
		var t0 time.Time
		if f.took != nil {
			t0 = c.cfg.clock.Now()
		}
		r := f.run(nctx, s.i, prior, sc, args)
		f.finish(s.i, f.classify(s.i, r, nctx.Err() != nil), t0, false)
	}()
}

// run performs node i's op on the blocking path.
func (f *fanout) run(ctx context.Context, i int, prior *result, sc *script, args []interface{}) result {
	if sc == nil {
		var skip result
		var send bool
		if sc, args, skip, send = f.op.prepare(i, prior); !send {
			return skip
		}
	}
	reply, err := f.c.eval(ctx, f.c.nodes[i], sc, sc.keysAndArgs(args)...)
	if err != nil {
		return result{vote: voteFail, err: err}
	}
	return f.op.parse(i, reply)
}

// complete receives the reply to the slot's queued command, or the failure of
// its connection (completer). It runs on the connection's reader.
func (s *slot) complete(reply interface{}, err error) {
	f := s.f
	if p := s.ahead; p != nil && err != nil && !isReplyError(err) {
		// The connection failed: wait for the prior's outcome (it failed
		// first, in order) and go again as a follower would, on a new
		// connection, as if never queued behind it.
		f.mu.Lock()
		// Unmarked as queued, so that no slot queues behind the dead
		// command; those queued behind it failed with it and follow s.
		s.ahead, s.queued = nil, false
		f.mu.Unlock()
		p.f.follow(s.i, s)
		return
	}
	var r result
	if err != nil {
		f.c.suspect(f.c.nodes[s.i], err)
		r = result{vote: voteFail, err: err}
	} else {
		r = f.op.parse(s.i, reply)
	}
	f.finish(s.i, f.classify(s.i, r, !time.Now().Before(s.deadline)), s.t0, false)
}

// classify turns a failed result's error into a *NodeError (see nodeErr);
// timedOut reports that the node's per-node timeout has passed.
func (f *fanout) classify(i int, r result, timedOut bool) result {
	if r.vote == voteFail {
		ctx := f.ctx
		if f.kept.Load() { // a straggler's failure is its own, not the caller's end
			ctx = context.Background()
		}
		n := f.c.nodes[i]
		r.err = nodeErr(ctx, timedOut, n.addr, f.timeout, explainReplyError(n, r.err))
	}
	return r
}

// finish records node i's result, unless it is already final (the first
// outcome wins: a reply after cancellation is dropped), wakes those waiting
// for it and launches the slots that follow it. cancelling finishes only a
// node whose command is queued on a connection or not yet sent: a node on
// the blocking path is finished by its goroutine, promptly since its context
// ends with the caller's (unless the fan-out is kept), so that nothing
// follows it before it is sent.
func (f *fanout) finish(i int, r result, t0 time.Time, cancelling bool) {
	var took time.Duration
	if f.took != nil && !t0.IsZero() {
		took = f.c.cfg.clock.Now().Sub(t0)
	}
	s := &f.slots[i]
	f.mu.Lock()
	if s.done || (cancelling && s.slow) {
		f.mu.Unlock()
		return
	}
	s.done = true
	f.undone.Add(-1)
	f.results[i] = r
	if f.took != nil {
		f.took[i] = took
	}
	wake, next := s.wake, s.followers
	s.followers = nil
	f.mu.Unlock()
	if wake != nil {
		close(wake)
	}
	f.arrived <- i
	if w, ok := f.op.(watchedOp); ok {
		// Last: the goroutine woken last runs next on this thread, and
		// the one this wakes (an heir) is the one the lock waits for.
		w.arrived(i, r)
	}
	for next != nil {
		fl := next
		next, fl.link = fl.link, nil
		fl.launch(&f.results[i])
	}
	f.c.wg.Done()
}

// cancel finishes every node not on the blocking path with the caller's
// context error (see finish).
func (f *fanout) cancel() {
	err := f.ctx.Err()
	for i := range f.slots {
		if !f.isDone(i) {
			f.finish(i, result{vote: voteFail, err: &NodeError{Addr: f.c.nodes[i].addr, Err: err}}, f.t0, true)
		}
	}
}

// next returns the next node whose result arrived. If the caller's context
// ends first, it cancels the nodes still queued (their results arrive at
// once). Only the fan-out's owner may call it.
func (f *fanout) next() int {
	for {
		select {
		case i := <-f.arrived:
			return i
		case <-f.cancelled:
			f.cancelled = nil
			f.cancel()
		}
	}
}

// allDone reports whether every node's result is in; it never blocks, nor
// takes a lock.
func (f *fanout) allDone() bool { return f.undone.Load() == 0 }

// isDone reports whether node i's result is in; it never blocks.
func (f *fanout) isDone(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slots[i].done
}

// wait waits for node i's result; any goroutine may call it.
func (f *fanout) wait(i int) {
	s := &f.slots[i]
	f.mu.Lock()
	if s.done {
		f.mu.Unlock()
		return
	}
	if s.wake == nil {
		s.wake = make(chan struct{})
	}
	wake := s.wake
	f.mu.Unlock()
	<-wake
}

// waitAll waits for every node's result.
func (f *fanout) waitAll() {
	for i := range f.slots {
		f.wait(i)
	}
}

// collect reads results as they arrive and returns the tally as soon as
// stop says the outcome is known, or once every node has answered. The
// returned votes hold votePending for nodes still in flight. Only the
// fan-out's owner may call it.
func (f *fanout) collect(stop func(tally) bool) (tally, []vote) {
	t := tally{n: len(f.results)}
	votes := make([]vote, len(f.results))
	for got := 0; got < t.n && !stop(t); got++ {
		i := f.next()
		votes[i] = f.results[i].vote
		t.add(votes[i])
	}
	return t, votes
}

// settled returns each node's vote if its result has arrived, votePending
// otherwise; it never blocks.
func (f *fanout) settled() []vote {
	votes := make([]vote, len(f.slots))
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.slots {
		if f.slots[i].done {
			votes[i] = f.results[i].vote
		}
	}
	return votes
}

// failures returns the errors of the nodes whose vote is voteFail. Only
// nodes with a known vote are read: the others may still be writing.
func (f *fanout) failures(votes []vote) []error {
	var errs []error
	for i, v := range votes {
		if v == voteFail {
			errs = append(errs, f.results[i].err)
		}
	}
	return errs
}

// awaitAnswered waits, for every node whose result in prior has arrived and
// satisfies want, for this fan-out's result on that node, and repeats until a
// pass finds no newly arrived node. After a miss (want: answered) this
// makes "no key of ours remains on any node that answered before TryLock
// returned" hold, and after Unlock (want: granted) "no node that granted us
// still holds the key", without waiting for nodes that do not answer (a
// paused node would cost a full timeout): those finish in the background
// within their timeouts. Only the fan-out's owner may call it.
func (f *fanout) awaitAnswered(prior *fanout, want func(result) bool) {
	var small [16]bool
	waited := small[:0]
	if len(f.slots) > len(small) {
		waited = make([]bool, len(f.slots))
	} else {
		waited = small[:len(f.slots)]
	}
	for progress := true; progress; {
		progress = false
		for i := range f.slots {
			if waited[i] || !prior.isDone(i) {
				continue
			}
			if want(prior.results[i]) {
				for !f.isDone(i) {
					f.next() // the owner's own arrivals: no channel to make
				}
			}
			waited[i], progress = true, true
		}
	}
}
