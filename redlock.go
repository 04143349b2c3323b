// Package redlock implements distributed locks over N independent Redis
// masters with the Redlock quorum algorithm.
//
// # Algorithm
//
// To acquire a key for a TTL, the Client sends one Lua script (set if
// absent, with PX) to all N nodes at once, each round trip bounded by a short
// per-node timeout. It counts the nodes that granted the key and decides as
// soon as the outcome is certain: the lock is held if at least N/2+1 nodes
// granted it and some validity remains, where
//
//	validity = ttl − elapsed − (ttl × drift factor + 2 ms)
//
// and elapsed is measured on the monotonic clock from the start of the
// successful attempt. Otherwise the Client releases the key on every node,
// including those that failed or timed out (a timed-out command may still
// have been applied), under its own bounded timeout even if the caller's
// context is already cancelled.
//
// # Guarantees and their assumptions
//
// While a *Lock is valid (before Until), no other Client holds a valid lock on
// the same key, provided that:
//
//   - the nodes are independent masters (no replication between them);
//   - clocks run at roughly the right rate: the node clocks and the client's
//     monotonic clock differ in rate by less than the drift factor over one
//     TTL. Redis expires keys by the wall clock, so a node whose wall clock is
//     stepped forward (not slewed) can expire a key early;
//   - a node that loses its data (restart without persistence, or with
//     asynchronous fsync) stays out of service for longer than the longest
//     TTL before rejoining ("delayed restart"), or persists with
//     appendfsync always. The Client enforces this itself for restarts it
//     can see: a node whose run_id changed counts toward no quorum for one
//     guard window (see WithRestartGuard, WithStrictRestartGuard and
//     docs/chaos.md for what it cannot see).
//
// A lease cannot protect against the holder itself being paused (GC, page
// faults, a stopped VM) past Until: the process learns of the expiry too late
// and may touch the protected resource while another holder has the lock.
// Check Until before each step, keep the TTL generous, and where correctness
// matters let the resource reject stale holders (fencing).
//
// # Errors
//
// Failed acquisitions match ErrNotObtained; too few nodes answering also
// matches ErrQuorumUnreachable; a lock that is provably no longer held gives
// ErrLockLost; each failed node is a *NodeError in the returned error; and a
// cancelled or expired context makes errors.Is(err, ctx.Err()) true.
package redlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/hashicorp/go-multierror"
)

// Client acquires locks over a fixed set of independent Redis masters. It is
// safe for concurrent use by multiple goroutines. Close it when done: Close
// waits for the background releases it started.
type Client struct {
	nodes []*node
	cfg   config

	mu     sync.RWMutex // guards closed against the wg.Add of new operations; first contact's run_id writes
	closed bool
	wg     sync.WaitGroup // node calls in flight, including background releases

	maxTTL atomic.Int64 // the longest TTL used, in ns: the default restart-guard window
}

// New returns a Client over the given pools, one per independent Redis
// master. The Client does not close the pools. It returns an error if there
// are no pools, one is nil, the same pool is given twice, or an option is
// invalid.
func New(pools []Pool, opts ...Option) (*Client, error) {
	if len(pools) == 0 {
		return nil, errors.New("redlock: New: no pools given (want one per Redis master)")
	}
	seen := make(map[Pool]int)
	nodes := make([]*node, len(pools))
	for i, p := range pools {
		if isNil(p) {
			return nil, fmt.Errorf("redlock: New: pool %d is nil", i)
		}
		if reflect.TypeOf(p).Comparable() {
			if j, dup := seen[p]; dup {
				return nil, fmt.Errorf("%w: New: pools %d and %d are the same pool", ErrDuplicateNode, j, i)
			}
			seen[p] = i
		}
		nodes[i] = &node{addr: fmt.Sprintf("pool[%d]", i), t: &poolTransport{pool: p}}
	}
	return newClient(nodes, opts)
}

// Dial returns a Client over the given Redis masters, each given as
// "redis://[user:password@]host:port[/db]" or "host:port" (a lone
// "redis://secret@host:port" is a password, as for redis-cli). The Client owns
// the connection pools it creates and closes them in Close. No connection is
// made before the first operation. It returns an error for an empty list, a
// malformed URL, an unsupported scheme or two URLs naming the same host and
// port (the database is ignored: it is the same server). Errors never contain
// passwords.
func Dial(urls []string, opts ...Option) (*Client, error) {
	if len(urls) == 0 {
		return nil, errors.New("redlock: Dial: no node URLs given (want one per Redis master)")
	}
	seen := make(map[string]int)
	eps := make([]endpoint, len(urls))
	for i, u := range urls {
		ep, err := parseEndpoint(u)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[ep.addr]; dup {
			return nil, fmt.Errorf("%w: Dial: URLs %d and %d both name %s", ErrDuplicateNode, j, i, ep.addr)
		}
		seen[ep.addr] = i
		eps[i] = ep
	}
	nodes := make([]*node, len(eps))
	for i, ep := range eps {
		t := &poolTransport{}
		p := dialPool(ep, t.connected)
		t.pool, t.owned = p, p
		nodes[i] = &node{addr: ep.addr, t: t}
	}
	c, err := newClient(nodes, opts)
	if err != nil {
		for _, n := range nodes {
			n.t.close()
		}
	}
	return c, err
}

func newClient(nodes []*node, opts []Option) (*Client, error) {
	cfg := defaultConfig()
	for i, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("redlock: option %d is nil", i)
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	c := &Client{nodes: nodes, cfg: cfg}
	for _, n := range nodes {
		if t, ok := n.t.(*poolTransport); ok && t.owned != nil {
			n := n
			t.onConnect = func(ctx context.Context, conn redis.Conn) error { return c.onConnect(ctx, n, conn) }
		}
	}
	return c, nil
}

func isNil(p Pool) bool {
	if p == nil {
		return true
	}
	v := reflect.ValueOf(p)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// Close waits for the node calls still in flight (background releases end
// within their per-node timeouts) and closes the pools that Dial created.
// Operations on a closed Client return ErrClosed. Locks obtained from it
// are not released: Unlock them first. Close is idempotent.
func (c *Client) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	var errs *multierror.Error
	for _, n := range c.nodes {
		if err := n.t.close(); err != nil {
			errs = multierror.Append(errs, &NodeError{Addr: n.addr, Err: err})
		}
	}
	return errs.ErrorOrNil()
}

// TryLock makes one attempt to acquire key for ttl. It returns the held lock,
// or an error matching ErrNotObtained (and ErrQuorumUnreachable when too few
// nodes answered, and ctx.Err() when ctx ended). After a failed attempt the
// key is released on every node; nodes that answered no longer hold it when
// TryLock returns, others lose it within ttl at most.
//
// The attempt returns as soon as its outcome is certain, so one slow or
// paused node costs about one round trip, not a timeout, unless the quorum
// needs it. The ttl is used in whole milliseconds and must leave some
// validity after the drift allowance.
func (c *Client) TryLock(ctx context.Context, key string, ttl time.Duration) (*Lock, error) {
	if err := c.checkLockArgs("TryLock", ctx, key, ttl); err != nil {
		return nil, err
	}
	return c.attempt(ctx, key, wireTTL(ttl))
}

// Lock acquires key for ttl, retrying after a random delay (see WithRetry)
// until it succeeds or ctx ends. Each attempt is a TryLock with a fresh token.
// When ctx ends it returns an error matching ErrNotObtained and ctx.Err(),
// carrying the last attempt's outcome.
func (c *Client) Lock(ctx context.Context, key string, ttl time.Duration) (*Lock, error) {
	if err := c.checkLockArgs("Lock", ctx, key, ttl); err != nil {
		return nil, err
	}
	ttl = wireTTL(ttl)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		l, err := c.attempt(ctx, key, ttl)
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return l, err
		}
		timer.Reset(c.cfg.retryDelay + jitter(c.cfg.retryJitter))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, &opError{msg: err.Error() + ": " + ctx.Err().Error(), causes: []error{err, ctx.Err()}}
		}
	}
}

func jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return time.Duration(mathrand.Int64N(int64(max)))
}

// checkLockArgs validates the arguments of an acquisition.
func (c *Client) checkLockArgs(op string, ctx context.Context, key string, ttl time.Duration) error {
	switch {
	case c == nil:
		return fmt.Errorf("redlock: %s on a nil *Client", op)
	case ctx == nil:
		return fmt.Errorf("redlock: %s: nil context", op)
	case key == "":
		return fmt.Errorf("redlock: %s: empty key", op)
	}
	return c.checkTTL(op, ttl)
}

// checkTTL rejects a TTL that cannot give a valid lock: not positive, below
// the PX granularity of one millisecond, or used up by the drift allowance.
func (c *Client) checkTTL(op string, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("redlock: %s: ttl %v is below 1ms (want a positive number of milliseconds)", op, ttl)
	}
	ttl = wireTTL(ttl)
	if d := drift(ttl, c.cfg.driftFactor); validity(ttl, 0, d) <= 0 {
		return fmt.Errorf("redlock: %s: ttl %v leaves no validity after the drift allowance of %v", op, ttl, d)
	}
	return nil
}

// begin registers an operation with the Client, or reports it closed.
func (c *Client) begin() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	c.wg.Add(1) // held until the operation has started its fan-outs
	return nil
}

// attempt is one acquisition attempt with a fresh token.
func (c *Client) attempt(ctx context.Context, key string, ttl time.Duration) (*Lock, error) {
	if err := c.begin(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotObtained, err)
	}
	defer c.wg.Done()
	token, err := newToken()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotObtained, err)
	}
	name := c.cfg.keyPrefix + key
	ms := ttl.Milliseconds()
	c.noteTTL(ttl)
	timeout := c.cfg.nodeTimeoutFor(ttl)

	start := c.cfg.clock.Now()
	acq := c.start(ctx, timeout, nil, func(ctx context.Context, n *node, _ *result) result {
		reply, err := c.eval(ctx, n, acquireScript, name, token, ms)
		if err != nil {
			return result{vote: voteFail, err: err}
		}
		v, pttl, err := parseAcquire(reply)
		return result{vote: v, val: pttl, err: err}
	})
	t, votes := acq.collect(tally.decided)
	elapsed := c.cfg.clock.Now().Sub(start)
	d := drift(ttl, c.cfg.driftFactor)
	v := validity(ttl, elapsed, d)
	if t.reached() && v > 0 {
		return &Lock{c: c, key: key, name: name, token: token, ttl: ttl, acq: acq, until: start.Add(ttl - d)}, nil
	}

	// A miss: release everywhere our key may be (step 5), under a context
	// the caller cannot cancel.
	rel := c.release(context.WithoutCancel(ctx), acq, name, token, timeout)
	rel.awaitAnswered(acq)

	kinds := []error{ErrNotObtained}
	what := "lock not obtained"
	switch {
	case t.reached():
		what = fmt.Sprintf("lock not obtained: quorum reached after %v, leaving no validity of ttl %v", elapsed.Round(time.Microsecond), ttl)
	case t.unreachable() && ctx.Err() == nil:
		kinds = append(kinds, ErrQuorumUnreachable)
		what = "lock not obtained: quorum unreachable"
	case ctx.Err() == nil && t.fail == 0:
		what = "lock not obtained: held by another owner"
	}
	return nil, newOpError(ctx, what, key, kinds, t, acq.failures(votes))
}

// release sends the release script to every node once that node's acquire
// (acq) has settled, skipping nodes where the acquire was refused: our token
// was never written there.
func (c *Client) release(ctx context.Context, acq *fanout, name, token string, timeout time.Duration) *fanout {
	return c.start(ctx, timeout, acq, func(ctx context.Context, n *node, prior *result) result {
		if prior.vote == voteNo {
			return result{vote: voteNo}
		}
		reply, err := c.eval(ctx, n, releaseScript, name, token)
		if err != nil {
			return result{vote: voteFail, err: err}
		}
		v, err := parseFlag("release", reply)
		return result{vote: v, err: err}
	})
}

// newToken returns 160 random bits from crypto/rand, hex-encoded (the Redis
// documentation's 20 bytes from /dev/urandom).
func newToken() (string, error) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("redlock: reading random token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
