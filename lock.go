package redlock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Lock is a lock held on a quorum of nodes. It is safe for concurrent use by
// multiple goroutines. Holding a *Lock does not mean the lock is still held:
// it ends at Until at the latest, and earlier if nodes lose it.
type Lock struct {
	c     *Client
	key   string // as given by the caller
	name  string // the Redis key: prefix + key
	token string
	ttl   time.Duration
	acq   *fanout // the successful acquire; later operations wait for its stragglers

	mu       sync.Mutex
	until    time.Time
	unlocked bool
}

// Key returns the key as given to TryLock or Lock (without the key prefix).
func (l *Lock) Key() string {
	if l == nil {
		return ""
	}
	return l.key
}

// Token returns the random value that identifies this holder on the nodes.
func (l *Lock) Token() string {
	if l == nil {
		return ""
	}
	return l.token
}

// Until returns the end of the lock's validity: the time after which
// another client may hold it. It is computed on the monotonic clock from the
// start of the successful attempt (or extension), minus the drift allowance;
// compare it with time.Now, not with a wall-clock time from elsewhere.
func (l *Lock) Until() time.Time {
	if l == nil {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// Extend raises the remaining TTL of the lock to at least ttl on every node
// that still holds it, and moves Until to ttl (minus drift) after the start of
// the extension if that is later. It never shortens a node's TTL and never
// re-acquires a key that has lapsed.
//
// Extend succeeds only if a quorum holds the lock and accepts the extension
// before Until. It returns ErrLockLost when the lock is provably gone (Until
// passed, a quorum answered that the key is absent or holds another token, or
// Unlock was called), and ErrQuorumUnreachable (with a *NodeError per failed
// node) when too few nodes answered; after any failure Until is unchanged.
// If ctx ends, errors.Is(err, ctx.Err()) holds.
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) error {
	if err := l.check("Extend", ctx); err != nil {
		return err
	}
	c := l.c
	if err := c.checkTTL("Extend", ttl); err != nil {
		return err
	}
	ttl = wireTTL(ttl)
	start := c.cfg.clock.Now()
	l.mu.Lock()
	until, unlocked := l.until, l.unlocked
	l.mu.Unlock()
	switch {
	case unlocked:
		return fmt.Errorf("%w: %q was released by Unlock", ErrLockLost, l.key)
	case !start.Before(until):
		return fmt.Errorf("%w: %q expired at %v", ErrLockLost, l.key, until.Format(time.RFC3339Nano))
	}
	if err := c.begin(); err != nil {
		return err
	}
	defer c.wg.Done()

	ms := ttl.Milliseconds()
	c.noteTTL(ttl)
	f := c.start(ctx, c.cfg.nodeTimeoutFor(ttl), l.acq, func(ctx context.Context, n *node, prior *result) result {
		if prior.vote == voteNo {
			return result{vote: voteNo} // our token was never written there
		}
		reply, err := c.eval(ctx, n, extendScript, l.name, l.token, ms)
		if err != nil {
			return result{vote: voteFail, err: err}
		}
		v, err := parseFlag("extend", reply)
		return result{vote: v, err: err}
	})
	t, votes := f.collect(tally.held)
	now := c.cfg.clock.Now()
	switch {
	case t.reached() && now.Before(until):
		newUntil := start.Add(ttl - drift(ttl, c.cfg.driftFactor))
		l.mu.Lock()
		if newUntil.After(l.until) {
			l.until = newUntil
		}
		l.mu.Unlock()
		return nil
	case t.reached():
		return newOpError(ctx, "extension reached a quorum only after the lock's validity ended", l.key, []error{ErrLockLost}, t, f.failures(votes))
	case t.refusedByQuorum():
		return newOpError(ctx, "lock lost: a quorum no longer holds it", l.key, []error{ErrLockLost}, t, f.failures(votes))
	case !now.Before(until):
		return newOpError(ctx, "lock expired during the extension", l.key, []error{ErrLockLost}, t, f.failures(votes))
	case ctx.Err() != nil:
		return newOpError(ctx, "extension cancelled", l.key, nil, t, f.failures(votes))
	}
	return newOpError(ctx, "extension failed: quorum unreachable", l.key, []error{ErrQuorumUnreachable}, t, f.failures(votes))
}

// Unlock releases the lock on every node that holds it, comparing the token
// so that a key now held by another owner is never deleted. It runs under its
// own per-node timeouts even when ctx is already cancelled, so that
// `defer l.Unlock(ctx)` always releases; it returns as soon as a quorum has
// released (nodes still in flight finish in the background, bounded by their
// timeouts).
//
// It returns nil if a quorum released the lock, an error matching ErrLockLost
// if the lock was no longer held (so many nodes answered "not ours" that no
// quorum held it, or Until had passed), and one matching ErrQuorumUnreachable
// when too few nodes answered to tell. Unlock may be called again, for
// example after ErrQuorumUnreachable; every call attempts every node.
func (l *Lock) Unlock(ctx context.Context) error {
	if err := l.check("Unlock", ctx); err != nil {
		return err
	}
	c := l.c
	l.mu.Lock()
	l.unlocked = true
	until := l.until
	l.mu.Unlock()
	if err := c.begin(); err != nil {
		return err
	}
	defer c.wg.Done()

	ctx = context.WithoutCancel(ctx)
	f := c.release(ctx, l.acq, l.name, l.token, c.cfg.nodeTimeoutFor(l.ttl))
	t, votes := f.collect(tally.held)
	expired := !c.cfg.clock.Now().Before(until)
	switch {
	case t.reached() && !expired:
		return nil
	case t.reached() || (expired && !t.refusedByQuorum()):
		return newOpError(ctx, "released, but the lock's validity had already ended", l.key, []error{ErrLockLost}, t, f.failures(votes))
	case t.refusedByQuorum():
		return newOpError(ctx, "lock lost before Unlock: a quorum no longer held it", l.key, []error{ErrLockLost}, t, f.failures(votes))
	}
	return newOpError(ctx, "unlock incomplete: quorum unreachable", l.key, []error{ErrQuorumUnreachable}, t, f.failures(votes))
}

// check validates the receiver and context of a Lock method.
func (l *Lock) check(op string, ctx context.Context) error {
	switch {
	case l == nil || l.c == nil:
		return fmt.Errorf("redlock: %s on a nil or zero *Lock (obtain locks from Client.TryLock or Client.Lock)", op)
	case ctx == nil:
		return fmt.Errorf("redlock: %s: nil context", op)
	}
	return nil
}
