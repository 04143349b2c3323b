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
// matters let the resource reject stale holders: WithFencing gives every lock
// a token (Lock.Fence) that grows from one holder to the next, minted by the
// quorum at the cost of one more round trip (docs/fencing.md).
//
// # Security
//
// Dial accepts rediss:// URLs and WithTLSConfig for TLS, and
// redis://user:password@ URLs for ACL users; no error, log line or String
// output contains a password. At first contact each node's
// maxmemory-policy is checked: a policy that can evict lock keys gets a
// warning (WithEvictionWarning) or, with WithStrictEvictionPolicy, the node
// is refused (ErrEvictionPolicy). docs/security.md gives the threat model,
// the minimal ACL of a lock user and the recommended node settings.
//
// # Auto-extension
//
// Client.Do runs a function under a lock that renews itself by quorum every
// ttl/3 and cancels the function's context the moment the lock is lost: when
// a renewal finds it gone, or when Until − LossMargin arrives without a
// successful renewal. Lock.KeepAlive does the same for a lock from TryLock or
// Lock, and Lock.Done is closed when a lock ends. One scheduler goroutine per
// Client renews all its locks, in shared round trips; Unlock stops renewal
// before it releases. See docs/watchdog.md for the schedule, the margins and
// the measured cost.
//
// # Observability
//
// WithObserver sets callbacks for typed events: every acquisition attempt,
// extension and renewal, unlock and lock end (losses included), each with
// every node's vote, latency and error. They run after the outcome is
// decided, never while votes are counted, and cost nothing when unset.
// SlogObserver logs them with log/slog; the nested module
// github.com/redlockgo/redlock/metrics/prometheus exports Prometheus
// metrics. See docs/observability.md.
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
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"reflect"
	"strings"
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
	done   chan struct{}  // closed by Close: wakes waiting Lock calls
	wg     sync.WaitGroup // node calls in flight, including background releases

	hub    *hub         // release subscriptions (wake.go)
	queue  keyQueue     // local FIFO of waiting Lock calls per key (wait.go)
	wid    string       // random prefix of this Client's waiter ids (wait.go)
	wd     *watchdog    // auto-extension of this Client's locks (KeepAlive, Do, Done)
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
// "redis://[user:password@]host:port[/db]", "rediss://..." (TLS, see
// WithTLSConfig) or "host:port" (a lone "redis://secret@host:port" is a
// password, as for redis-cli). The Client owns
// the connection pools it creates and closes them in Close. No connection is
// made before the first operation. It returns an error for an empty list, a
// malformed URL, an unsupported scheme, a redis:// URL with WithTLSConfig, or
// two URLs naming the same host and port (the database is ignored: it is the
// same server). Errors never contain passwords. The connections Dial makes
// screen every reply for oversized or absurdly nested frames, so that a
// broken or hostile peer fails as one node instead of exhausting memory.
func Dial(urls []string, opts ...Option) (*Client, error) {
	if len(urls) == 0 {
		return nil, errors.New("redlock: Dial: no node URLs given (want one per Redis master)")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]int)
	nodes := make([]*node, len(urls))
	tcs := make([]*tls.Config, len(urls))
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
		if tcs[i], err = tlsFor(ep, cfg.tls); err != nil {
			return nil, err
		}
		eps[i] = ep
	}
	for i, ep := range eps {
		t := &poolTransport{}
		p, dial := dialPool(ep, tcs[i], t.connected)
		t.pool, t.owned, t.dial = p, p, dial
		nodes[i] = &node{addr: ep.addr, t: t}
	}
	return build(nodes, cfg), nil
}

// newClient is the end of New: options, then the Client.
func newClient(nodes []*node, opts []Option) (*Client, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.tls != nil {
		return nil, errors.New("redlock: New: WithTLSConfig applies to Dial only (configure TLS in the pools' dialers)")
	}
	return build(nodes, cfg), nil
}

// build assembles a Client over nodes whose transports are pool-per-call.
func build(nodes []*node, cfg config) *Client {
	if !cfg.noPipeline {
		for _, n := range nodes {
			if pt, ok := n.t.(*poolTransport); ok { // tests may plug in other transports
				n.t = newPipeTransport(pt)
			}
		}
	}
	c := &Client{nodes: nodes, cfg: cfg, done: make(chan struct{}), wid: fmt.Sprintf("%08x", mathrand.Uint32())}
	for _, n := range nodes {
		// The restart guard checks run_id on every connection a pool that
		// Dial created establishes (guard.go), also the pipelined
		// transport's own.
		t, ok := n.t.(*poolTransport)
		if pt, piped := n.t.(*pipeTransport); piped {
			t, ok = pt.pool, true
		}
		if ok {
			n := n
			t.guarded = func() error {
				n.mu.Lock()
				defer n.mu.Unlock()
				return c.guardedErr(n)
			}
			// A pipelined connection that fails, or finds the node closed
			// it or lost a script it had loaded, may mean a restart: the
			// next command re-checks first, as after a failed one (also
			// when nobody waits for the failed command's outcome any more).
			t.doubt = func(err error) { c.suspect(n, err) }
		}
		if ok && t.owned != nil {
			n := n
			t.onConnect = func(ctx context.Context, conn redis.Conn) error { return c.onConnect(ctx, n, conn) }
		}
	}
	c.hub = newHub(c)
	c.wd = newWatchdog(c)
	return c
}

// String describes the Client by its nodes' addresses (host:port, or pool[i]
// for New); it never shows credentials. GoString, used by %#v, is the same.
func (c *Client) String() string {
	if c == nil {
		return "redlock.Client(nil)"
	}
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr
	}
	return "redlock.Client{nodes: [" + strings.Join(addrs, " ") + "]}"
}

// GoString is String, so that %#v cannot print the configuration.
func (c *Client) GoString() string { return c.String() }

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

// Close stops auto-extension, waits for the node calls still in flight
// (background releases and renewals end within their per-node timeouts) and
// closes the pools that Dial created. Operations on a closed Client return
// ErrClosed. Locks obtained from it are not released: Unlock them first (or
// let Do return). Locks still kept alive are declared lost (ErrLockLost and
// ErrClosed): their Done channels close and Do cancels fn's context; every
// other open Done channel closes too. Close is idempotent.
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
	close(c.done)
	c.mu.Unlock()
	if c.wd != nil { // nil only in a Client not made by New or Dial
		c.wd.close()
	}
	c.hub.stop()
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
	l, _, err := c.attempt(ctx, key, wireTTL(ttl), nil, nil)
	return l, err
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
	for _, suffix := range []string{WaitersKeySuffix, WaitExpiryKeySuffix, FenceKeySuffix} {
		if strings.HasSuffix(key, suffix) {
			return fmt.Errorf("redlock: %s: key %q ends in %q, which names the queue or fencing counter of another lock key", op, key, suffix)
		}
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

// attempt is one acquisition attempt with a fresh token, on behalf of the
// waiting Lock call w (nil for TryLock), registering next (if not nil) behind
// it in the nodes' queues. After a miss it also describes what the waiting
// logic needs to know.
func (c *Client) attempt(ctx context.Context, key string, ttl time.Duration, w, next *waiter) (*Lock, *miss, error) {
	if err := c.begin(); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNotObtained, err)
	}
	defer c.wg.Done()
	token, err := newToken()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNotObtained, err)
	}
	name := c.cfg.keyPrefix + key
	ms := ttl.Milliseconds()
	c.noteTTL(ttl)
	timeout := c.cfg.nodeTimeoutFor(ttl)

	start := c.cfg.clock.Now()
	acq := c.start(ctx, timeout, nil, c.acquireOp(name, token, ms, w, next))
	t, votes := acq.collect(tally.decided)
	last, fence := acq, uint64(0) // last: the fan-out whose tally decides
	if c.cfg.fencing && t.reached() {
		// The token must be written back to a quorum before the grant, and
		// the write-back's time counts against validity (fence.go).
		last, t, votes, fence = c.mint(ctx, acq, votes, name, token, timeout)
	}
	elapsed := c.cfg.clock.Now().Sub(start)
	d := drift(ttl, c.cfg.driftFactor)
	v := validity(ttl, elapsed, d)
	if t.reached() && v > 0 {
		// Nodes still in first contact go on even if ctx ends now.
		acq.kept.Store(true)
		last.kept.Store(true)
		l := &Lock{c: c, key: key, name: name, token: token, waiter: w.ident(), fence: fence, ttl: ttl, acq: acq, start: start, until: start.Add(ttl - d)}
		if f := c.cfg.obs.Acquire; f != nil {
			f(AcquireEvent{Key: key, TTL: ttl, Outcome: OutcomeOK, Elapsed: elapsed, Validity: v, Fence: fence, Nodes: c.nodeVotes(last, votes)})
		}
		return l, nil, nil
	}
	// A miss: release everywhere our key may be (step 5), under a context
	// the caller cannot cancel. A waiting Lock keeps its place in the queue.
	rel := c.release(context.WithoutCancel(ctx), acq, name, token, "", nil, timeout)
	rel.awaitAnswered(acq, answered)
	// What waiting needs to know comes from the acquire, with every answer
	// that has arrived by now: the decision often falls on the refusals alone,
	// before the free nodes' grants arrive, and without them the wake-up time
	// would be the longest remaining TTL instead of the quorum-th smallest.
	m := missOf(acq.settled(), acq.results)
	m.acq, m.token = acq, token

	kinds := []error{ErrNotObtained}
	what := "lock not obtained"
	switch {
	case t.reached():
		what = fmt.Sprintf("lock not obtained: quorum reached after %v, leaving no validity of ttl %v", elapsed.Round(time.Microsecond), ttl)
	case t.unreachable() && ctx.Err() == nil:
		kinds = append(kinds, ErrQuorumUnreachable)
		what = "lock not obtained: quorum unreachable"
	case last != acq && ctx.Err() == nil && t.fail == 0:
		what = "lock not obtained: the fencing token's write-back was refused (lock lost or a competing holder minted)"
	case ctx.Err() == nil && t.fail == 0:
		what = "lock not obtained: held by another owner (or reserved for a waiting Lock)"
	}
	err = newOpError(ctx, what, key, kinds, t, last.failures(votes))
	if f := c.cfg.obs.Acquire; f != nil {
		// After the release: an observer never delays it.
		ev := AcquireEvent{Key: key, TTL: ttl, Outcome: outcomeOf(ctx, err), Elapsed: elapsed, Nodes: c.nodeVotes(last, votes), Err: err}
		if t.reached() {
			ev.Validity = v
		}
		f(ev)
	}
	return nil, m, err
}

// release sends the release script to every node once that node's acquire
// (acq) has settled. With waiter set (the id of the Lock call that made the
// acquire), it also removes that call from the node's queue of waiters;
// without, it skips nodes where the acquire was refused: our token was never
// written there. With heir set, the nodes that release keep the key for that
// waiting call of this Client ahead of their queue (keyQueue.heir) or, if
// heir.token is set, hand it straight to that token (handoff.go).
func (c *Client) release(ctx context.Context, acq *fanout, name, token, leaving string, heir *handoff, timeout time.Duration) *fanout {
	_, _, grace := (*waiter)(nil).args(timeout)
	heirID, heirToken, heirMS, nextID, nextRank := heir.args()
	args := releaseScript.args(name, waitersKey(name), waitExpiryKey(name), token, releaseChannel(name), leaving,
		heirID, grace, heirToken, heirMS, nextID, nextRank, MaxWakeInterval.Milliseconds())
	return c.start(ctx, timeout, acq, &releaseOp{args, leaving != "", heir})
}

// releaseOp is the node operation of a release.
type releaseOp struct {
	args    []interface{}
	dequeue bool     // also leave the queue of waiters: send to nodes that refused the acquire too
	heir    *handoff // told of each result (handoff.arrive), or nil
}

// arrived tells the heir, if any, of node i's result (watchedOp).
func (o *releaseOp) arrived(i int, r result) {
	if o.heir != nil && o.heir.token != "" {
		o.heir.arrive(i, r)
	}
}

// queuesBehind: a release may be queued behind its acquire (behindOp).
func (o *releaseOp) queuesBehind() {}

func (o *releaseOp) prepare(_ int, prior *result) (*script, []interface{}, result, bool) {
	if prior != nil && prior.vote == voteNo && !o.dequeue {
		return nil, nil, result{vote: voteNo}, false
	}
	return releaseScript, o.args, result{}, true
}

// Replies of the release script besides 0 (not ours) and 1 (released).
const (
	releasedOthersWait = 2 // released; waiters of other Clients are queued
	handedOver         = 3 // handed to the heir's token
	handedOthersWait   = 4 // both
)

func (o *releaseOp) parse(_ int, reply interface{}) result {
	if n, ok := reply.(int64); ok && n >= releasedOthersWait && n <= handedOthersWait {
		return result{vote: voteYes, val: n}
	}
	v, err := parseFlag("release", reply)
	return result{vote: v, err: err}
}

// othersQueued reports whether a node whose release has arrived said that
// waiters of other Clients are queued for the key.
func (f *fanout) othersQueued() bool {
	for i, v := range f.settled() {
		if v == voteYes && (f.results[i].val == releasedOthersWait || f.results[i].val == handedOthersWait) {
			return true
		}
	}
	return false
}

// newToken returns 160 random bits from crypto/rand, hex-encoded (the Redis
// documentation's 20 bytes from /dev/urandom).
func newToken() (string, error) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("redlock: reading random token: %w", err)
	}
	var h [40]byte
	hex.Encode(h[:], b[:])
	return string(h[:]), nil
}
