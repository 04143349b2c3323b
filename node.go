package redlock

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// transport is the seam between the algorithm and the wire: it sends one
// command or script to one node and returns the reply. Implementations must
// bound the whole round trip, including getting a connection (dial, AUTH), by
// ctx's deadline, which carries the per-node timeout. The quorum code only
// ever talks to nodes through it, so a pipelined transport can replace the
// pool-per-call one without touching the algorithm.
type transport interface {
	do(ctx context.Context, cmd string, args ...interface{}) (interface{}, error)
	eval(ctx context.Context, s *script, keysAndArgs ...interface{}) (interface{}, error)
	// conn returns a connection of its own for a blocking operation (a
	// subscription), obtained within ctx; the caller closes it.
	conn(ctx context.Context) (redis.Conn, error)
	close() error
}

// node is one independent Redis master as the Client sees it.
type node struct {
	addr string // host:port or pool[i]; never credentials
	t    transport

	mu     sync.Mutex
	runID  string // the server's run_id, learnt at first contact
	reject error  // permanent refusal found at first contact (not master, duplicate)
	old    string // the server's redis_version if older than the wait queue needs (see tooOld)
	g      guardState
}

// serverInfo is what first contact learns from INFO.
type serverInfo struct {
	runID   string
	role    string
	policy  string        // maxmemory_policy
	uptime  time.Duration // -1 if not reported
	version string        // redis_version; "" if not reported
}

// parseInfo reads the fields first contact needs from an INFO reply.
func parseInfo(s string) serverInfo {
	si := serverInfo{uptime: -1}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "run_id":
			si.runID = v
		case "role":
			si.role = v
		case "maxmemory_policy":
			si.policy = v
		case "uptime_in_seconds":
			si.uptime = parseUptime(v)
		case "redis_version":
			si.version = v
		}
	}
	return si
}

// evicts reports whether a maxmemory-policy can evict lock keys: allkeys-*
// evicts any key, volatile-* any key with a TTL, and every lock key has one.
func evicts(policy string) bool {
	return strings.HasPrefix(policy, "allkeys-") || strings.HasPrefix(policy, "volatile-")
}

// ready performs first contact with the node, once: it checks with a single
// INFO that the node is a master, not the same server as another endpoint
// (same run_id), and whether its maxmemory-policy can evict lock keys (a
// warning, or a refusal with WithStrictEvictionPolicy). A server whose INFO
// lacks these fields is accepted unchecked. Until first contact succeeds it is
// retried on every operation; a refusal is permanent. After first contact it
// re-runs INFO only when a connection-level failure made a restart possible,
// and refuses the node (ErrNodeGuarded) while the restart guard holds it out
// of quorums.
func (c *Client) ready(ctx context.Context, n *node) error {
	if ok, err := c.readyNow(n); ok {
		return err
	}
	n.mu.Lock()
	done, reject, recheck := n.runID != "", n.reject, n.g.recheck
	n.mu.Unlock()
	if reject != nil {
		return reject
	}
	if done && recheck {
		reply, err := redis.String(n.t.do(ctx, "INFO")) // as at first contact (see onConnect)
		if err != nil {
			return fmt.Errorf("restart check (INFO): %w", err)
		}
		c.noteRestart(n, c.observe(n, parseInfo(reply)))
	}
	if done {
		n.mu.Lock()
		defer n.mu.Unlock()
		return c.guardedErr(n)
	}
	reply, err := redis.String(n.t.do(ctx, "INFO"))
	if err != nil {
		return fmt.Errorf("first contact (INFO): %w", err)
	}
	si := parseInfo(reply)
	durable := c.durable(ctx, n)
	if si.runID == "" {
		// Real Redis always reports run_id and role; in-process servers
		// (miniredis, used by the demo) and some proxies do not. Such a node
		// cannot be checked for duplicates or role: it is accepted as is.
		si.runID = "unknown:" + n.addr
	}

	warn, err := c.admit(n, si, durable)
	if warn {
		// Outside the locks: the hooks are the caller's code.
		c.warnEviction(n, si.policy)
	}
	return err
}

// readyNow reports whether ready would do no I/O on n (first contact is
// done, or refused, and no restart check is due), and if so what it would
// return. It never blocks.
func (c *Client) readyNow(n *node) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.reject != nil:
		return true, n.reject
	case n.runID == "" || n.g.recheck:
		return false, nil
	}
	return true, c.guardedErr(n)
}

// admit records the outcome of first contact with n. It reports whether this
// call is the one that should warn about an evicting policy.
func (c *Client) admit(n *node, si serverInfo, durable bool) (warn bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runID != "" || n.reject != nil { // another operation got there first
		if n.reject != nil {
			return false, n.reject
		}
		return false, c.guardedErr(n)
	}
	switch {
	case si.role != "master" && si.role != "":
		n.reject = fmt.Errorf("%w (role %q)", ErrNotMaster, si.role)
	case evicts(si.policy) && c.cfg.evictionStrict:
		n.reject = fmt.Errorf("%w (maxmemory-policy %s)", ErrEvictionPolicy, si.policy)
	default:
		for _, o := range c.nodes {
			if o != n && o.runID == si.runID { // o.runID is guarded by c.mu for writes
				n.reject = fmt.Errorf("%w: %s is the same server as %s (run_id %s)", ErrDuplicateNode, n.addr, o.addr, si.runID)
			}
		}
	}
	if n.reject != nil {
		return false, n.reject
	}
	c.firstContactGuard(n, si, durable)
	n.runID = si.runID
	if tooOld(si.version) {
		n.old = si.version
	}
	return evicts(si.policy), c.guardedErr(n)
}

// eval runs a script on n after first contact.
func (c *Client) eval(ctx context.Context, n *node, s *script, keysAndArgs ...interface{}) (interface{}, error) {
	if err := c.ready(ctx, n); err != nil {
		return nil, err
	}
	reply, err := n.t.eval(ctx, s, keysAndArgs...)
	c.suspect(n, err)
	return reply, err
}

// tooOld reports whether a server's redis_version predates Redis 6.2, whose
// ZADD ... LT the wait queue of Lock and Do needs; TryLock, Extend and
// Unlock work on older servers (README, Requirements). An empty or
// unreadable version is not judged.
func tooOld(version string) bool {
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil {
		return false
	}
	return ma < 6 || (ma == 6 && mi < 2)
}

// explainReplyError adds to a script's error reply from node n what is
// known to explain it: a server too old for the wait queue.
func explainReplyError(n *node, err error) error {
	if !isReplyError(err) {
		return err
	}
	n.mu.Lock()
	old := n.old
	n.mu.Unlock()
	if old == "" {
		return err
	}
	return fmt.Errorf("%w (the node runs Redis %s; Lock and Do need 6.2 or newer)", err, old)
}
