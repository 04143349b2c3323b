package redlock

import (
	"context"
	"fmt"
	"time"
)

// This file holds fencing: the minting of a token that increases from one
// holder of a key to the next, by the quorum itself and without a clock
// (docs/fencing.md has the protocol, its proof and its assumptions).
//
// With fencing on, an attempt takes two rounds instead of one:
//
//  1. the fenced acquire script sets the key and, atomically, reads the key's
//     counter on each node, as max(counter, the node's TIME in µs);
//  2. the client mints T = 1 + the largest counter of the acquire quorum and
//     writes T back with the fence script, which applies only where the node
//     still holds our token and only if its counter is below T. The lock is
//     granted only if a quorum accepted the write-back before validity ran out.
//
// Two granted locks' write-back quorums share a node, where the later write
// found the earlier token and succeeded only by exceeding it: tokens differ,
// and a holder that started after another returned gets the larger one.

const (
	// DefaultFenceLifetime is how long a key's fencing counter lives on a node
	// after its last use (an acquisition or a write-back there). Counters
	// expire so that keys locked once do not accumulate forever; an expired
	// counter is re-seeded from the node's clock, which keeps tokens
	// increasing as long as the lifetime exceeds the clock offset between the
	// nodes (see WithFenceLifetime).
	DefaultFenceLifetime = 24 * time.Hour

	// MinFenceLifetime is the shortest lifetime WithFenceLifetime accepts.
	MinFenceLifetime = time.Second

	// FenceKeySuffix is appended to a lock's Redis key (prefix + key) to name
	// its fencing counter. Do not lock keys ending in it with fencing on.
	FenceKeySuffix = ":fence"
)

// WithFencing makes every lock carry a fencing token (Lock.Fence), minted by
// the quorum: tokens of two locks on the same key differ, and a lock whose
// acquisition started after another's TryLock or Lock returned has a larger
// token. A resource that remembers the largest token it has seen and rejects
// smaller ones is thereby safe from a holder that was paused past its
// validity. This needs no timing assumption while no node loses a counter;
// for restarts without data and expired counters, see docs/fencing.md.
//
// Cost: one more round trip per successful attempt (the write-back must reach
// a quorum before the lock is granted, and its time is deducted from the
// validity), a second key per lock key on each node, and slightly longer
// scripts. A Client without this option pays nothing. A Client without
// fencing on the same key neither reads nor advances the counters, and its
// locks carry token 0, which a fenced resource should reject.
func WithFencing() Option {
	return func(c *config) error {
		c.fencing = true
		return nil
	}
}

// WithFenceLifetime sets how long a fencing counter lives on a node after its
// last use (default DefaultFenceLifetime, at least MinFenceLifetime, used in
// whole milliseconds). It must exceed the largest offset between the nodes'
// wall clocks (docs/fencing.md): a counter that expires is re-seeded from the
// node's clock, which dominates every earlier token only once that offset has
// passed. A shorter lifetime keeps fewer keys; a longer one tolerates worse
// clocks. It has no effect without WithFencing.
func WithFenceLifetime(d time.Duration) Option {
	return func(c *config) error {
		if d < MinFenceLifetime {
			return fmt.Errorf("redlock: WithFenceLifetime(%v): want at least %v", d, MinFenceLifetime)
		}
		c.fenceLifetime = wireTTL(d)
		return nil
	}
}

// Fence returns the lock's fencing token, or 0 for a lock from a Client
// without WithFencing. Pass it with every write to the protected resource,
// and have the resource reject a token smaller than the largest it has seen.
func (l *Lock) Fence() uint64 {
	if l == nil {
		return 0
	}
	return l.fence
}

// counterKey names the fencing counter of the Redis key name.
func counterKey(name string) string { return name + FenceKeySuffix }

// acquireOp is the node operation of an acquisition: the plain acquire
// script, or with fencing the fenced one, whose yes carries the node's
// counter. Every node gets the same arguments.
type acquireOp struct {
	script *script
	args   []interface{}
}

// acquireOp returns the acquisition of name with token for ms milliseconds.
// w is the waiting Lock call the attempt belongs to, nil for TryLock; next,
// if not nil, the call to register behind it in the nodes' queues.
func (c *Client) acquireOp(name, token string, ms int64, w, next *waiter) nodeOp {
	id, rank, grace := w.args(c.cfg.nodeTimeoutFor(time.Duration(ms) * time.Millisecond))
	nextID, nextRank := next.place()
	maxWait := MaxWakeInterval.Milliseconds()
	if c.cfg.fencing {
		return &acquireOp{acquireFencedScript, acquireFencedScript.args(name, counterKey(name), waitersKey(name), waitExpiryKey(name),
			token, ms, c.cfg.fenceLifetime.Milliseconds(), id, rank, maxWait, grace, nextID, nextRank)}
	}
	return &acquireOp{acquireScript, acquireScript.args(name, waitersKey(name), waitExpiryKey(name),
		token, ms, id, rank, maxWait, grace, nextID, nextRank)}
}

func (o *acquireOp) prepare(int, *result) (*script, []interface{}, result, bool) {
	return o.script, o.args, result{}, true
}

func (o *acquireOp) parse(_ int, reply interface{}) result {
	v, val, holder, err := parseAcquire(reply)
	if err == nil && v == voteYes && o.script == acquireFencedScript && val <= 0 {
		v, err = voteFail, fmt.Errorf("redlock: fenced acquire reply without a counter")
	}
	return result{vote: v, val: val, holder: holder, err: err}
}

// fenceOp writes a minted fencing token back to the nodes that granted the
// acquire it follows.
type fenceOp struct{ args []interface{} }

func (o *fenceOp) prepare(_ int, prior *result) (*script, []interface{}, result, bool) {
	switch prior.vote {
	case voteYes:
		return fenceScript, o.args, result{}, true
	case voteFail:
		return nil, nil, *prior, false // already a *NodeError; a timed-out acquire cannot be counted on
	}
	return nil, nil, result{vote: voteNo}, false // the key is another holder's there
}

func (o *fenceOp) parse(_ int, reply interface{}) result {
	v, err := parseFlag("fence", reply)
	return result{vote: v, err: err}
}

// mint is the second round of a fenced attempt whose acquire reached a
// quorum (votes are acq's votes as collected): it mints the token from the
// counters of the nodes that granted and writes it back to every node that
// granted, each after its acquire has settled. It returns the write-back
// fan-out, its tally and votes as collected, and the token. The lock may be
// granted only if that tally reached a quorum (and validity remains).
func (c *Client) mint(ctx context.Context, acq *fanout, votes []vote, name, token string, timeout time.Duration) (*fanout, tally, []vote, uint64) {
	fence := mintToken(acq.results, votes)
	wb := c.start(ctx, timeout, acq, &fenceOp{fenceScript.args(name, counterKey(name), token, fence, c.cfg.fenceLifetime.Milliseconds())})
	t, wvotes := wb.collect(tally.decided)
	return wb, t, wvotes, fence
}

// mintToken returns one more than the largest counter among the nodes whose
// collected vote is yes. Only those counters are known to be in the max: a
// straggler's counter is not, and its write-back succeeds only if the token
// exceeds its counter anyway (fence.lua).
func mintToken(results []result, votes []vote) uint64 {
	var high int64
	for i, v := range votes {
		if v == voteYes {
			high = max(high, results[i].val)
		}
	}
	return uint64(high) + 1
}
