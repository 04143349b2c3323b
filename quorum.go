package redlock

import (
	"context"
	"time"
)

// This file holds the fan-out of one operation to every node, the counting of
// their answers, and the decision "quorum reached" / "quorum impossible" as
// soon as either is certain (step 2 and 3 of the algorithm).

// quorum returns the number of nodes that must agree among n: a strict
// majority, so that any two quorums share at least one node.
func quorum(n int) int {
	return n/2 + 1
}

// vote is one node's answer to an operation.
type vote uint8

const (
	votePending vote = iota // no answer yet
	voteYes                 // the node did what was asked (set, extended, released)
	voteNo                  // the node answered and refused: the key is absent or holds another token
	voteFail                // no usable answer: timeout, connection or server error
)

// tally counts the votes of one operation over n nodes.
type tally struct {
	n, yes, no, fail int
}

func (t *tally) add(v vote) {
	switch v {
	case voteYes:
		t.yes++
	case voteNo:
		t.no++
	case voteFail:
		t.fail++
	}
}

// reached reports whether a quorum said yes.
func (t tally) reached() bool { return t.yes >= quorum(t.n) }

// impossible reports whether so many nodes refused or failed that a quorum
// of yes can no longer be reached.
func (t tally) impossible() bool { return t.no+t.fail > t.n-quorum(t.n) }

// decided reports whether the outcome is certain whatever the pending nodes say.
func (t tally) decided() bool { return t.reached() || t.impossible() }

// refusedByQuorum reports whether enough nodes answered "not ours" that a
// quorum cannot hold our token: the lock is provably lost. Failures do not
// count; they leave the question open.
func (t tally) refusedByQuorum() bool { return t.no > t.n-quorum(t.n) }

// unreachable reports whether failures alone make a quorum impossible: too
// few nodes answered at all.
func (t tally) unreachable() bool { return t.fail > t.n-quorum(t.n) }

// result is one node's outcome in a fan-out.
type result struct {
	vote   vote
	val    int64  // script-specific detail, e.g. the holder's PTTL on a refused acquire
	holder string // on a refused acquire, the holder's token ("" if reserved for a waiter)
	err    error  // set when vote is voteFail
}

// nodeTimeoutKey carries the per-node timeout in the context of a node
// operation: the pipelined transport judges a connection by it, not by the
// caller's own deadline, which may be earlier (see pipe.call).
type nodeTimeoutKey struct{}

// nodeOp performs one operation on one node within ctx, whose deadline is the
// per-node timeout, and classifies the answer. prior is the node's result in
// the fan-out this one was started after, or nil.
type nodeOp func(ctx context.Context, n *node, prior *result) result

// fanout is one operation in flight on every node. Each node's result is
// written to results[i] (and its round trip to took[i]) before done[i] is
// closed, so a reader that waited on done[i] may read them without further
// synchronisation.
type fanout struct {
	results []result
	took    []time.Duration // each node's round trip, like results; nil without an observer
	done    []chan struct{}
	arrived chan int // node indexes in completion order; buffered to n so no sender ever blocks
}

// start sends op to every node concurrently, each under its own timeout
// derived from ctx. If after is not nil, each node's op starts only once
// after's result for that node has arrived (its own timeout bounds the wait)
// and may read it: a release or an extension must not overtake an acquire
// still in flight on the same node, or the late acquire would leave a key
// behind. The goroutines belong to the Client (Close waits for them); each
// ends within its timeouts, so returning early leaks nothing.
func (c *Client) start(ctx context.Context, timeout time.Duration, after *fanout, op nodeOp) *fanout {
	n := len(c.nodes)
	f := &fanout{
		results: make([]result, n),
		done:    make([]chan struct{}, n),
		arrived: make(chan int, n),
	}
	for i := range c.nodes {
		f.done[i] = make(chan struct{})
	}
	timed := c.cfg.obs.observed()
	if timed {
		f.took = make([]time.Duration, n)
	}
	c.wg.Add(n)
	for i, nd := range c.nodes {
		go func(i int, nd *node) {
			defer c.wg.Done()
			var prior *result
			if after != nil {
				<-after.done[i]
				prior = &after.results[i]
			}
			nctx, cancel := context.WithTimeout(context.WithValue(ctx, nodeTimeoutKey{}, timeout), timeout)
			var t0 time.Time
			if timed {
				t0 = c.cfg.clock.Now()
			}
			r := op(nctx, nd, prior)
			if timed {
				f.took[i] = c.cfg.clock.Now().Sub(t0)
			}
			if r.vote == voteFail {
				r.err = nodeErr(ctx, nctx, nd.addr, timeout, r.err)
			}
			cancel()
			f.results[i] = r
			close(f.done[i])
			f.arrived <- i
		}(i, nd)
	}
	return f
}

// collect reads results as they arrive and returns the tally as soon as
// stop says the outcome is known, or once every node has answered. The
// returned votes hold votePending for nodes still in flight.
func (f *fanout) collect(stop func(tally) bool) (tally, []vote) {
	t := tally{n: len(f.results)}
	votes := make([]vote, len(f.results))
	for got := 0; got < t.n && !stop(t); got++ {
		i := <-f.arrived
		votes[i] = f.results[i].vote
		t.add(votes[i])
	}
	return t, votes
}

// held is the stop condition of Extend and Unlock: a quorum said yes, or
// enough nodes said "not ours" that the lock is provably lost. Failures alone
// do not stop them early, so that lost and unreachable stay distinguishable.
func (t tally) held() bool { return t.reached() || t.refusedByQuorum() }

// settled returns each node's vote if its result has arrived, votePending
// otherwise; it never blocks.
func (f *fanout) settled() []vote {
	votes := make([]vote, len(f.done))
	for i, d := range f.done {
		select {
		case <-d:
			votes[i] = f.results[i].vote
		default:
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
// within their timeouts.
func (f *fanout) awaitAnswered(prior *fanout, want func(result) bool) {
	waited := make([]bool, len(f.done))
	for progress := true; progress; {
		progress = false
		for i := range f.done {
			if waited[i] {
				continue
			}
			select {
			case <-prior.done[i]:
				if want(prior.results[i]) {
					<-f.done[i]
				}
				waited[i], progress = true, true
			default:
			}
		}
	}
}

// answered and granted are the filters of awaitAnswered. A node whose op
// failed (timed out, paused, unreachable) would most likely cost the release
// a full timeout too (with a majority paused, it would double the time to
// error): its release finishes in the background.
func answered(r result) bool { return r.vote != voteFail }
func granted(r result) bool  { return r.vote == voteYes }
