package redlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// This file holds the restart guard: a node that restarted (and so may have
// lost the lock keys it held) does not count toward any quorum until a guard
// window has passed. It enforces the Redlock documentation's "delayed
// restart" in the client instead of leaving it to the operator: without it,
// a node that comes back empty right away can grant a key that a holder on a
// bare majority still believes it owns.
//
// Detection costs nothing per operation. A restart is noticed when
//   - a connection is (re)established by a pool that Dial created: the new
//     connection's first command is INFO, compared with the run_id learnt at
//     first contact, before any lock command is sent on it. Every connection
//     to a restarted process is new, so none escapes this check;
//   - an operation fails at the connection level (any error that is not a
//     Redis error reply): the next operation on that node runs INFO first.
//     This is the only detection for pools given to New, whose dials the
//     Client cannot see.
// A changed run_id starts the guard. The stricter mode also guards, at first
// contact, a node whose uptime is below the window: a Client started right
// after a node restarted has no earlier run_id to compare.

// guardMode selects how the restart guard behaves.
type guardMode uint8

const (
	guardOn     guardMode = iota // default: guard nodes seen to restart
	guardOff                     // WithoutRestartGuard
	guardStrict                  // WithStrictRestartGuard: also young nodes at first contact
)

// guardState is a node's restart-guard state, guarded by node.mu.
type guardState struct {
	until   time.Time // the node counts again from this instant (Client's clock)
	reason  string    // why it is guarded, for the NodeError
	recheck bool      // a connection-level failure was seen: verify run_id first
	durable bool      // appendonly yes + appendfsync always, and exemption enabled
}

// WithRestartGuard sets the restart guard's window: how long a node that
// restarted is kept out of every quorum (default 0: the longest TTL this
// Client has used so far, plus its drift allowance). Set it to the longest
// TTL any client of these nodes uses when other programs hold longer locks.
// window must not be negative. The guard is on by default.
func WithRestartGuard(window time.Duration) Option {
	return func(c *config) error {
		if window < 0 {
			return fmt.Errorf("redlock: WithRestartGuard(%v): want a non-negative window (0: longest TTL used)", window)
		}
		c.guardWindow = window
		if c.guard == guardOff {
			c.guard = guardOn
		}
		return nil
	}
}

// WithoutRestartGuard disables the restart guard: a node that restarted
// counts toward quorums at once. Safe only if every node persists with
// appendfsync always or operators delay restarts by more than the longest TTL.
func WithoutRestartGuard() Option {
	return func(c *config) error {
		c.guard = guardOff
		return nil
	}
}

// WithStrictRestartGuard additionally guards, at first contact, any node
// whose INFO uptime_in_seconds is below the window, for the rest of the
// window. It protects a Client started right after a node restarted (it has
// no earlier run_id to compare), at the price of waiting up to one window
// before a freshly started cluster grants its first lock.
func WithStrictRestartGuard() Option {
	return func(c *config) error {
		c.guard = guardStrict
		return nil
	}
}

// WithDurableNodesExempt exempts from the restart guard nodes that report
// appendonly yes and appendfsync always at first contact (CONFIG GET): such a
// node fsyncs every write before replying, so a restart does not lose lock
// keys. A node where CONFIG is forbidden (renamed or denied by ACL) or that
// persists less strictly is not exempt.
func WithDurableNodesExempt() Option {
	return func(c *config) error {
		c.exemptDurable = true
		return nil
	}
}

// noteTTL records ttl as used by this Client: the default guard window is the
// longest one.
func (c *Client) noteTTL(ttl time.Duration) {
	for {
		cur := c.maxTTL.Load()
		if int64(ttl) <= cur || c.maxTTL.CompareAndSwap(cur, int64(ttl)) {
			return
		}
	}
}

// guardWindow returns how long a restarted node stays out of quorums: a key
// it lost was set at most one TTL before the restart, and the holder's
// validity ended before that TTL ran out on any clock within the drift.
func (c *Client) guardWindow() time.Duration {
	if c.cfg.guardWindow > 0 {
		return c.cfg.guardWindow
	}
	ttl := time.Duration(c.maxTTL.Load())
	if ttl == 0 {
		return 0
	}
	return ttl + drift(ttl, c.cfg.driftFactor)
}

// guardedErr returns an error wrapping ErrNodeGuarded if n is in its guard
// window. The caller holds n.mu.
func (c *Client) guardedErr(n *node) error {
	if c.cfg.guard == guardOff || n.g.until.IsZero() {
		return nil
	}
	left := n.g.until.Sub(c.cfg.clock.Now())
	if left <= 0 {
		n.g.until, n.g.reason = time.Time{}, ""
		return nil
	}
	return fmt.Errorf("%w: %s; counts again in %v", ErrNodeGuarded, n.g.reason, left.Round(time.Millisecond))
}

// startGuard guards n for the window minus age (how long it has already
// been up). The caller holds n.mu.
func (c *Client) startGuard(n *node, age time.Duration, reason string) {
	if c.cfg.guard == guardOff || n.g.durable {
		return
	}
	left := c.guardWindow() - age
	if left <= 0 {
		return
	}
	if until := c.cfg.clock.Now().Add(left); until.After(n.g.until) {
		n.g.until, n.g.reason = until, reason
	}
}

// firstContactGuard applies the strict mode and the durability exemption at
// first contact. It runs before n.runID is published, under c.mu and n.mu.
func (c *Client) firstContactGuard(n *node, si serverInfo, durable bool) {
	n.g.durable = durable
	if c.cfg.guard == guardStrict && si.uptime >= 0 {
		c.startGuard(n, si.uptime, fmt.Sprintf("up for only %v at first contact (strict restart guard)", si.uptime))
	}
}

// durable reports whether the node fsyncs every write (asked only when the
// exemption is enabled). Any error, including a forbidden CONFIG, means no.
func (c *Client) durable(ctx context.Context, n *node) bool {
	if !c.cfg.exemptDurable {
		return false
	}
	cfg, err := redis.StringMap(n.t.do(ctx, "CONFIG", "GET", "append*"))
	return err == nil && cfg["appendonly"] == "yes" && cfg["appendfsync"] == "always"
}

// observe compares what INFO reports on an established node with its
// known run_id and starts the guard when the server restarted. It returns
// the restart's description, or "" if the server did not restart.
func (c *Client) observe(n *node, si serverInfo) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runID == "" || n.reject != nil {
		return "" // first contact has not happened: ready does it
	}
	n.g.recheck = false
	if si.runID == "" || si.runID == n.runID {
		return ""
	}
	old := n.runID
	n.runID = si.runID
	// The whole window, from detection: the server's uptime follows its
	// wall clock, which is exactly what may be wrong on a restarted host.
	reason := fmt.Sprintf("restarted (run_id %.8s… is now %.8s…), it may have lost lock keys", old, si.runID)
	c.startGuard(n, 0, reason)
	return reason
}

// suspect marks n for a run_id check before its next operation after a
// connection-level failure (not a Redis error reply): the server may have
// restarted behind a pool whose dials the Client cannot see. A caller that
// cancelled is no such failure (a per-node timeout ends its call with
// context.DeadlineExceeded, the caller's cancellation with Canceled): until
// the check is done, the node's commands take the blocking path, where
// those of different operations are not kept in order.
func (c *Client) suspect(n *node, err error) {
	if c.cfg.guard == guardOff || err == nil || isReplyError(err) || errors.Is(err, ErrNodeGuarded) || errors.Is(err, context.Canceled) {
		return
	}
	n.mu.Lock()
	n.g.recheck = true
	n.mu.Unlock()
}

// isReplyError reports whether err is (or wraps) an error reply from Redis,
// as opposed to a connection-level failure.
func isReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// onConnect checks a connection that a Dial-created pool has just
// established, before any lock command runs on it: a connection to a
// restarted server starts the guard.
func (c *Client) onConnect(ctx context.Context, n *node, conn redis.Conn) error {
	if c.cfg.guard == guardOff {
		return nil
	}
	n.mu.Lock()
	known := n.runID != ""
	n.mu.Unlock()
	if !known {
		return nil // first contact is in progress on this very connection
	}
	// Plain INFO, as at first contact: servers that only speak part of
	// Redis (miniredis, some proxies) refuse INFO's sections.
	reply, err := redis.String(redis.DoContext(conn, ctx, "INFO"))
	if err != nil {
		return err // a failed dial, as the operation that dialled reports it
	}
	c.noteRestart(n, c.observe(n, parseInfo(reply)))
	return nil
}

// parseUptime reads INFO's uptime_in_seconds; -1 when absent.
func parseUptime(v string) time.Duration {
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil || s < 0 {
		return -1
	}
	return time.Duration(s) * time.Second
}
