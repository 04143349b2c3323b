package redlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
)

// Sentinel errors. Every error returned by this package that concerns a lock
// matches one or more of them with errors.Is, so that callers can tell
// "held by someone else", "quorum unreachable", "lost" and "cancelled" apart:
//
//	contended:   errors.Is(err, ErrNotObtained) && !errors.Is(err, ErrQuorumUnreachable)
//	unreachable: errors.Is(err, ErrQuorumUnreachable)
//	lost:        errors.Is(err, ErrLockLost)
//	cancelled:   errors.Is(err, ctx.Err())
var (
	// ErrNotObtained is matched by every failed acquisition (TryLock, Lock),
	// whatever the cause; the other sentinels, a *NodeError per failed node
	// and the context's error tell the causes apart.
	ErrNotObtained = errors.New("redlock: lock not obtained")

	// ErrQuorumUnreachable is matched when too few nodes answered for a
	// quorum to be possible: by such a failed acquisition, and by an Extend or
	// Unlock that could not reach a quorum. Each failed node is reported as a
	// *NodeError in the same error. After such an Extend the lock's Until is
	// unchanged.
	ErrQuorumUnreachable = errors.New("redlock: quorum of nodes unreachable")

	// ErrLockLost is returned by Extend and Unlock when the lock is provably
	// no longer held: so many nodes answered that the key is absent or holds
	// another token that no quorum can hold ours, its validity (Until) has
	// passed, or it was already released by Unlock.
	ErrLockLost = errors.New("redlock: lock lost")

	// ErrNodeTimeout is wrapped in the *NodeError of a node that did not
	// answer within the per-node timeout (while the caller's context was
	// still live). The command may still have been applied.
	ErrNodeTimeout = errors.New("redlock: no reply within the per-node timeout")

	// ErrNotMaster is wrapped in the *NodeError of a node whose ROLE is not
	// master. Redlock needs independent masters: a replica would answer from
	// its master's data and break quorum independence.
	ErrNotMaster = errors.New("redlock: node is not a master")

	// ErrDuplicateNode is returned by New and Dial for two endpoints with the
	// same host and port, and wrapped in the *NodeError of a node found at
	// first contact to be the same server (same run_id) as another endpoint.
	// Such a node never counts toward a quorum: one server must not vote twice.
	ErrDuplicateNode = errors.New("redlock: two endpoints lead to the same Redis server")

	// ErrEvictionPolicy is wrapped in the *NodeError of a node refused at
	// first contact under WithStrictEvictionPolicy because its
	// maxmemory-policy (allkeys-* or volatile-*) can evict lock keys. Such a
	// node never counts toward a quorum.
	ErrEvictionPolicy = errors.New("redlock: node's maxmemory-policy can evict lock keys")

	// ErrNodeGuarded is wrapped in the *NodeError of a node held out of
	// every quorum by the restart guard: it restarted (its run_id changed), so
	// it may have lost lock keys, and its guard window has not passed yet (see
	// WithRestartGuard). The node counts again once the window has passed.
	ErrNodeGuarded = errors.New("redlock: node restarted recently and is kept out of quorums")

	// ErrClosed is returned by operations on a closed Client.
	ErrClosed = errors.New("redlock: client closed")
)

// NodeError is the failure of one node during an operation. Errors returned
// by TryLock, Lock, Extend and Unlock aggregate one NodeError per failed node;
// use errors.As to find them.
type NodeError struct {
	// Addr names the node: host:port for endpoints given to Dial, pool[i]
	// for pools given to New. It never contains credentials.
	Addr string
	// Err is the cause: ErrNodeTimeout, a connection error, a Redis error
	// reply (redis.Error), ErrNotMaster, ErrDuplicateNode,
	// ErrEvictionPolicy, ErrNodeGuarded, or the caller's context error.
	Err error
}

func (e *NodeError) Error() string { return "node " + e.Addr + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *NodeError) Unwrap() error { return e.Err }

// nodeErr turns a failed node call into a *NodeError. A per-node timeout
// (timedOut: it passed while the caller's ctx is live) becomes
// ErrNodeTimeout, so that errors.Is(err, context.DeadlineExceeded) holds
// only when the caller's own deadline passed.
func nodeErr(ctx context.Context, timedOut bool, addr string, timeout time.Duration, err error) error {
	var ne *NodeError
	if errors.As(err, &ne) {
		return err
	}
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case timedOut || isTimeout(err):
		err = fmt.Errorf("%w (%v)", ErrNodeTimeout, timeout)
	}
	return &NodeError{Addr: addr, Err: err}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// oneLine formats aggregated node errors on a single line, for logs and the CLI.
func oneLine(es []error) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// opError is the error of a quorum operation. Its message summarises the
// votes; Unwrap exposes the sentinels, the caller's context error and the
// per-node errors (a *multierror.Error) to errors.Is and errors.As.
type opError struct {
	msg    string
	causes []error
}

func (e *opError) Error() string   { return e.msg }
func (e *opError) Unwrap() []error { return e.causes }

// newOpError builds the error of a failed operation on key: what (e.g. "lock
// not obtained"), the sentinels it matches, the tally and each failed node's
// error.
func newOpError(ctx context.Context, what, key string, kinds []error, t tally, failed []error) error {
	causes := append([]error(nil), kinds...)
	msg := fmt.Sprintf("redlock: %q: %s (quorum %d of %d: %d yes, %d no, %d failed",
		key, what, quorum(t.n), t.n, t.yes, t.no, t.fail)
	if pending := t.n - t.yes - t.no - t.fail; pending > 0 {
		msg += fmt.Sprintf(", %d not awaited", pending)
	}
	msg += ")"
	if len(failed) > 0 {
		nodes := multierror.Append(nil, failed...)
		nodes.ErrorFormat = oneLine
		causes = append(causes, nodes)
		msg += ": " + nodes.Error()
	}
	// Read once: the message and the causes must agree on whether ctx had
	// ended even when its deadline passes meanwhile.
	if err := ctx.Err(); err != nil {
		causes = append(causes, err)
		msg += ": " + err.Error()
	}
	return &opError{msg: msg, causes: causes}
}
