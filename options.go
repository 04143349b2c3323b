package redlock

import (
	"fmt"
	"time"
)

// Defaults for the options. A zero or absent option means the default.
const (
	// DefaultRetryDelay is the base pause between two attempts of Lock.
	DefaultRetryDelay = 50 * time.Millisecond
	// DefaultRetryJitter is the upper bound of the random time added to
	// DefaultRetryDelay, so that competing clients do not split the vote in
	// lock-step (the algorithm's "retry after a random delay").
	DefaultRetryJitter = 50 * time.Millisecond

	// MinNodeTimeout, MaxNodeTimeout and NodeTimeoutDivisor define the default
	// per-node timeout: ttl/NodeTimeoutDivisor clamped to [MinNodeTimeout,
	// MaxNodeTimeout], and never above ttl/2. For a 10 s TTL that is 1 s; for
	// 1 s it is 100 ms. The floor is deliberately above a LAN round trip: a
	// tighter timeout turns client CPU contention into spurious misses (50 ms
	// with 64 goroutines on two busy cores did). The timeout only costs time
	// when a quorum needs a slow node: decisions are taken as soon as the
	// outcome is certain.
	MinNodeTimeout     = 100 * time.Millisecond
	MaxNodeTimeout     = time.Second
	NodeTimeoutDivisor = 10
)

// Option configures a Client. Options are validated by New and Dial, which
// return an error naming the bad option.
type Option func(*config) error

type config struct {
	driftFactor float64
	nodeTimeout time.Duration // 0: derived from each operation's TTL
	retryDelay  time.Duration
	retryJitter time.Duration
	keyPrefix   string
	clock       clock

	guard         guardMode
	guardWindow   time.Duration // 0: the longest TTL used, plus drift
	exemptDurable bool
}

func defaultConfig() config {
	return config{
		driftFactor: DefaultDriftFactor,
		retryDelay:  DefaultRetryDelay,
		retryJitter: DefaultRetryJitter,
		clock:       systemClock{},
	}
}

// WithDriftFactor sets the fraction of the TTL reserved for clock-rate
// differences between the client and the nodes (default DefaultDriftFactor;
// DriftPadding is always added). It must be in [0, 1).
func WithDriftFactor(f float64) Option {
	return func(c *config) error {
		if !(f >= 0 && f < 1) { // also rejects NaN
			return fmt.Errorf("redlock: WithDriftFactor(%v): want a value in [0, 1)", f)
		}
		c.driftFactor = f
		return nil
	}
}

// WithNodeTimeout bounds each node's round trip, including getting a
// connection (default: derived from the TTL, see MinNodeTimeout). Keep it well
// below the TTL: time spent waiting for a slow node is validity lost.
func WithNodeTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("redlock: WithNodeTimeout(%v): want a positive duration", d)
		}
		c.nodeTimeout = d
		return nil
	}
}

// WithRetry sets the pause between two attempts of Lock to delay plus a
// random duration in [0, jitter) (defaults DefaultRetryDelay and
// DefaultRetryJitter). delay must be positive and jitter non-negative.
func WithRetry(delay, jitter time.Duration) Option {
	return func(c *config) error {
		if delay <= 0 || jitter < 0 {
			return fmt.Errorf("redlock: WithRetry(%v, %v): want a positive delay and a non-negative jitter", delay, jitter)
		}
		c.retryDelay, c.retryJitter = delay, jitter
		return nil
	}
}

// WithKeyPrefix prepends prefix to every lock key written to Redis (default:
// none, the key is used as given). Lock.Key returns the key without it.
func WithKeyPrefix(prefix string) Option {
	return func(c *config) error {
		c.keyPrefix = prefix
		return nil
	}
}

// withClock replaces the monotonic clock (tests only: client-side drift).
func withClock(k clock) Option {
	return func(c *config) error {
		c.clock = k
		return nil
	}
}

// nodeTimeoutFor returns the per-node timeout for an operation with ttl.
func (c *config) nodeTimeoutFor(ttl time.Duration) time.Duration {
	if c.nodeTimeout > 0 {
		return c.nodeTimeout
	}
	return defaultNodeTimeout(ttl)
}

// defaultNodeTimeout derives the per-node timeout from the TTL.
func defaultNodeTimeout(ttl time.Duration) time.Duration {
	d := min(max(ttl/NodeTimeoutDivisor, MinNodeTimeout), MaxNodeTimeout)
	return max(min(d, ttl/2), time.Millisecond)
}
