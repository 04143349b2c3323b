package redlock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// This file holds the observer hook: typed events for every acquisition
// attempt, extension, renewal, unlock and lock end, each with what every
// node answered. Events are built only when an observer wants them, and
// only once the operation's outcome is decided, so an unobserved Client
// pays nothing and an observed one never slows the counting of votes.

// Observer receives the Client's events. Each field is optional: a nil
// field costs nothing, and no event is built for it. Set it with
// WithObserver; SlogObserver is a ready adapter to log/slog, and the nested
// module github.com/redlockgo/redlock/metrics/prometheus exports Prometheus
// metrics.
//
// The callbacks run synchronously on the goroutine of the operation that
// produced the event (the caller of TryLock, Lock, Extend, Unlock or Do, or
// the Client's renewal workers), after the operation's outcome is decided
// and before it returns: the time they take is not counted in Elapsed or
// against validity, but it delays the caller and, for renewals, the next
// renewal batch. They must be fast and must not block; hand slow work
// (network export, disk) off to another goroutine. They may be called
// concurrently and must be safe for that. They must not call back into the
// Client's lock methods for the lock of the event. Events and their Nodes
// slices are the observer's to keep.
//
// Observer is a struct of functions rather than an interface so that new
// events can be added without breaking existing observers.
type Observer struct {
	// Acquire is called once per acquisition attempt that reached the nodes
	// (not on a closed Client): once for TryLock, once for each attempt of
	// Lock and Do, after a missed attempt's release. A Lock whose context
	// ends while it waits between attempts emits nothing more: its last
	// event is the contended attempt before the wait.
	Acquire func(AcquireEvent)
	// Extend is called once per Extend call that reached the nodes (not when
	// Extend refuses at once: unlocked, lost or expired), and once
	// per lock in every renewal of auto-extension (Renewal set).
	Extend func(ExtendEvent)
	// Unlock is called once per Unlock call that reached the nodes
	// (including the release at the end of Do).
	Unlock func(UnlockEvent)
	// End is called once when a lock ends: Unlock, a loss detected by
	// auto-extension, an expiry seen by Done, or Client.Close. A lock that
	// is neither unlocked nor watched (Done, KeepAlive) is never seen to
	// end, and gets no End event. End is called after Done is closed and
	// Do's context cancelled (stopping the work comes first), so a caller
	// woken by Done may run before the event is delivered.
	End func(EndEvent)
	// Node is called when the Client learns something about a node outside
	// the votes of an operation: a restart (the restart guard), or a
	// maxmemory-policy that can evict lock keys (see WithEvictionWarning).
	// Unlike the others, it runs on the goroutine that contacted the node,
	// inside an operation's fan-out (as the eviction warning always did):
	// a slow Node callback delays that node's vote.
	Node func(NodeEvent)
}

// Outcome classifies the result of an operation, as the sentinel errors do.
type Outcome uint8

// Outcomes. Their String forms are the outcome labels of the metrics
// adapter (which says granted for an acquisition's ok).
const (
	// OutcomeOK: the lock was acquired, extended or released by a quorum.
	OutcomeOK Outcome = iota
	// OutcomeContended: an acquisition failed although enough nodes
	// answered: the key is held by another owner (or a quorum came too late
	// to leave validity).
	OutcomeContended
	// OutcomeUnreachable: too few nodes answered (ErrQuorumUnreachable).
	OutcomeUnreachable
	// OutcomeCancelled: the caller's context ended.
	OutcomeCancelled
	// OutcomeLost: the lock is provably no longer held (ErrLockLost).
	OutcomeLost
	// OutcomeError: anything else (the Client is closed, no randomness).
	OutcomeError
)

var outcomeNames = [...]string{"ok", "contended", "unreachable", "cancelled", "lost", "error"}

// String returns "ok", "contended", "unreachable", "cancelled", "lost" or "error".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", o)
}

// outcomeOf classifies err, the result of an operation under ctx.
func outcomeOf(ctx context.Context, err error) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return OutcomeCancelled
	case errors.Is(err, ErrLockLost):
		return OutcomeLost
	case errors.Is(err, ErrQuorumUnreachable):
		return OutcomeUnreachable
	case errors.Is(err, ErrClosed):
		return OutcomeError
	case errors.Is(err, ErrNotObtained):
		return OutcomeContended
	}
	return OutcomeError
}

// Vote is what one node answered in an operation.
type Vote uint8

// Votes.
const (
	// VotePending: the operation was decided before this node answered; its
	// answer is not reported.
	VotePending Vote = Vote(votePending)
	// VoteYes: the node did what was asked (set, extended, released).
	VoteYes Vote = Vote(voteYes)
	// VoteNo: the node answered and refused (the key is absent or holds
	// another token).
	VoteNo Vote = Vote(voteNo)
	// VoteFailed: no usable answer; NodeVote.Err says why.
	VoteFailed Vote = Vote(voteFail)
)

// String returns "pending", "yes", "no" or "failed".
func (v Vote) String() string {
	switch v {
	case VotePending:
		return "pending"
	case VoteYes:
		return "yes"
	case VoteNo:
		return "no"
	case VoteFailed:
		return "failed"
	}
	return fmt.Sprintf("Vote(%d)", v)
}

// NodeVote is one node's part in an operation.
type NodeVote struct {
	// Addr names the node as NodeError.Addr does (host:port or pool[i]);
	// never credentials.
	Addr string
	Vote Vote
	// Latency is the node's round trip, including first contact when it
	// happened in this operation; zero for VotePending.
	Latency time.Duration
	// Err is the node's *NodeError when Vote is VoteFailed, else nil.
	Err error
}

// AcquireEvent describes one acquisition attempt.
type AcquireEvent struct {
	Key     string // as given by the caller, without the key prefix
	TTL     time.Duration
	Outcome Outcome
	// Elapsed is the attempt's time from sending to the decision (including
	// the fencing write-back), on the monotonic clock.
	Elapsed time.Duration
	// Validity is the lock's validity left at the decision (ttl − elapsed −
	// drift); zero or negative on a miss where the quorum came too late,
	// zero on other misses.
	Validity time.Duration
	Fence    uint64     // the fencing token of a granted lock with WithFencing
	Nodes    []NodeVote // one per node, in the Client's node order
	Err      error      // the error TryLock returns; nil when granted
}

// ExtendEvent describes one extension of one lock: an Extend call, or one
// lock's share of a renewal round trip of auto-extension.
type ExtendEvent struct {
	Key     string
	TTL     time.Duration // the TTL asked for
	Renewal bool          // sent by auto-extension (KeepAlive, Do)
	Outcome Outcome
	Elapsed time.Duration
	// Validity is the time left before Until after the extension (as
	// extended on success).
	Validity time.Duration
	Nodes    []NodeVote
	Err      error
}

// UnlockEvent describes one Unlock call.
type UnlockEvent struct {
	Key     string
	Outcome Outcome
	Elapsed time.Duration
	// Held is the time from the lock's acquisition to this Unlock.
	Held  time.Duration
	Nodes []NodeVote
	Err   error
}

// EndEvent describes the end of a lock (see Observer.End).
type EndEvent struct {
	Key string
	// Lost is set when auto-extension gave the lock up (a renewal found it
	// gone, the loss deadline passed, or Client.Close stopped it): the
	// holder must stop touching the protected resource.
	Lost bool
	// Held is the time from the lock's acquisition to its end.
	Held time.Duration
	// Err says why the lock ended (it matches ErrLockLost or ErrClosed).
	Err error
}

// NodeEventKind says what a NodeEvent reports.
type NodeEventKind uint8

// Node event kinds.
const (
	// NodeRestarted: the node's run_id changed, so it may have lost lock
	// keys. Unless the restart guard is off, the node counts toward no
	// quorum for the guard window (its votes fail with ErrNodeGuarded).
	NodeRestarted NodeEventKind = iota + 1
	// NodeEvictionRisk: at first contact, the node's maxmemory-policy
	// (Detail) can evict lock keys. Reported once per node.
	NodeEvictionRisk
)

// String returns "restarted" or "eviction_risk".
func (k NodeEventKind) String() string {
	switch k {
	case NodeRestarted:
		return "restarted"
	case NodeEvictionRisk:
		return "eviction_risk"
	}
	return fmt.Sprintf("NodeEventKind(%d)", k)
}

// NodeEvent reports a change in what the Client knows of one node.
type NodeEvent struct {
	Addr   string // as NodeError.Addr; never credentials
	Kind   NodeEventKind
	Detail string // the restart's description, or the maxmemory-policy
}

// warnEviction reports that n's policy can evict lock keys: to the function
// of WithEvictionWarning if given, else to slog.Default() unless an observer
// takes node events; and to the observer's Node callback if any.
func (c *Client) warnEviction(n *node, policy string) {
	switch {
	case c.cfg.evictionWarn != nil:
		c.cfg.evictionWarn(n.addr, policy)
	case c.cfg.obs.Node == nil:
		warnEviction(n.addr, policy)
	}
	if obs := c.cfg.obs.Node; obs != nil {
		obs(NodeEvent{Addr: n.addr, Kind: NodeEvictionRisk, Detail: policy})
	}
}

// noteRestart reports a restart that observe found (reason not empty).
func (c *Client) noteRestart(n *node, reason string) {
	if obs := c.cfg.obs.Node; obs != nil && reason != "" {
		obs(NodeEvent{Addr: n.addr, Kind: NodeRestarted, Detail: reason})
	}
}

// WithObserver adds an observer of the Client's events (see Observer). It
// may be given more than once: every observer gets every event, in the order
// the options were given. The default is none.
func WithObserver(o Observer) Option {
	return func(c *config) error {
		c.obs.Acquire = chain(c.obs.Acquire, o.Acquire)
		c.obs.Extend = chain(c.obs.Extend, o.Extend)
		c.obs.Unlock = chain(c.obs.Unlock, o.Unlock)
		c.obs.End = chain(c.obs.End, o.End)
		c.obs.Node = chain(c.obs.Node, o.Node)
		return nil
	}
}

// chain calls a, then b; nil functions are skipped.
func chain[E any](a, b func(E)) func(E) {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return func(e E) { a(e); b(e) }
}

// observed reports whether any observer wants node timings.
func (o *Observer) observed() bool {
	return o.Acquire != nil || o.Extend != nil || o.Unlock != nil
}

// nodeVotes reports every node's part in f, for the nodes whose vote is
// known (votes[i] != votePending); the others are reported pending.
func (c *Client) nodeVotes(f *fanout, votes []vote) []NodeVote {
	nv := make([]NodeVote, len(c.nodes))
	for i, n := range c.nodes {
		nv[i] = NodeVote{Addr: n.addr, Vote: Vote(votes[i])}
		if votes[i] == votePending || f == nil {
			continue
		}
		if f.took != nil {
			nv[i].Latency = f.took[i]
		}
		if votes[i] == voteFail {
			nv[i].Err = f.results[i].err
		}
	}
	return nv
}
