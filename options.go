package redlock

import (
	"crypto/tls"
	"fmt"
	"log/slog"
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
	// 2 s and less it is 200 ms (100 ms for a 200 ms TTL). The floor is far
	// above a LAN round trip on purpose: a tighter timeout turns client CPU
	// contention into spurious misses (50 ms with 64 goroutines on two busy
	// cores did, and so did 100 ms on a machine at load 10). The timeout only
	// costs time when a quorum needs a slow node: decisions are taken as soon
	// as the outcome is certain.
	MinNodeTimeout     = 200 * time.Millisecond
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
	noPipeline  bool
	clock       clock

	tls            *tls.Config               // nil: plaintext unless a URL says rediss://
	evictionWarn   func(addr, policy string) // nil: warnEviction, unless an observer has a Node callback
	evictionStrict bool
	lossMargin     time.Duration // 0: LossMargin of each lock's TTL and per-node timeout
	maxHold        time.Duration // 0: auto-extension without a limit
	fencing        bool          // WithFencing
	fenceLifetime  time.Duration // WithFenceLifetime; whole milliseconds
	guard          guardMode
	guardWindow    time.Duration // 0: the longest TTL used, plus drift
	exemptDurable  bool
	obs            Observer // WithObserver; the zero value observes nothing
}

func defaultConfig() config {
	return config{
		driftFactor: DefaultDriftFactor,
		retryDelay:  DefaultRetryDelay,
		retryJitter: DefaultRetryJitter,
		clock:       systemClock{},

		fenceLifetime: DefaultFenceLifetime,
	}
}

// newConfig applies opts to the defaults.
func newConfig(opts []Option) (config, error) {
	cfg := defaultConfig()
	for i, o := range opts {
		if o == nil {
			return cfg, fmt.Errorf("redlock: option %d is nil", i)
		}
		if err := o(&cfg); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
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

// WithPipelining chooses the node transport (default true). With
// pipelining, each node gets one long-lived connection (taken from the Pool
// given to New for the Client's lifetime and returned by Close, or dialled
// by Dial's own dialer); the commands of all goroutines share it and are
// written and read in batches. A connection the node closed while idle
// (Redis's `timeout`, a proxy's or a firewall's idle limit) is replaced
// before the next command is sent on it, on Unix systems and with Dial, whose
// dialer sees the socket; with a Pool given to New, or elsewhere, that
// command fails on that node, as after a node restart. Without pipelining,
// every command borrows a connection from the pool for one round trip
// (redigo's DoContext; a pool's TestOnBorrow can check it).
// Subscriptions for wake-on-release always use connections of their own.
func WithPipelining(enabled bool) Option {
	return func(c *config) error {
		c.noPipeline = !enabled
		return nil
	}
}

// WithTLSConfig makes Dial connect to every node over TLS with a clone of cfg
// (made when the option is applied: later changes to cfg have no effect, and
// cfg itself is never modified). Set RootCAs to the CA that signed the
// servers' certificates, Certificates to a client certificate when the
// servers require one (tls-auth-clients), and ServerName when the nodes'
// certificates do not name the address dialled; an empty ServerName is set
// per node to the host of its URL. Nodes may then be given as host:port or
// rediss:// URLs; a redis:// URL is refused by Dial rather than sent in
// clear. Without this option, rediss:// URLs use TLS with the system's roots.
// The handshake is bounded by the per-node timeout. New, whose pools dial
// themselves, returns an error for this option.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) error {
		if cfg == nil {
			return fmt.Errorf("redlock: WithTLSConfig(nil): want a *tls.Config")
		}
		c.tls = cfg.Clone()
		return nil
	}
}

// WithLossMargin sets how long before Until auto-extension (KeepAlive, Do)
// gives a lock up when no renewal has moved Until (default: LossMargin of the
// lock's TTL and per-node timeout). It must be positive; Do and KeepAlive
// refuse a TTL for which the margin and the drift allowance leave less than
// half the TTL.
func WithLossMargin(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("redlock: WithLossMargin(%v): want a positive duration", d)
		}
		c.lossMargin = d
		return nil
	}
}

// WithEvictionWarning sets the function called at first contact with a node
// whose maxmemory-policy can evict lock keys (allkeys-* evicts any key,
// volatile-* any key with a TTL, which every lock key has): eviction deletes
// a held lock early and lets a second holder in. warn is called at most once
// per node, from the goroutine of the operation that made first contact, with
// the node's address (never credentials) and its policy; it must not block.
// The default logs one warning through slog.Default(), unless an observer
// (WithObserver) has a Node callback, which then gets the warning as a
// NodeEvictionRisk event instead; pass a no-op function to silence it. An
// observer's Node callback is called whether or not this option is given. See WithStrictEvictionPolicy to refuse such nodes instead.
func WithEvictionWarning(warn func(addr, policy string)) Option {
	return func(c *config) error {
		if warn == nil {
			return fmt.Errorf("redlock: WithEvictionWarning(nil): want a function (use a no-op to silence warnings)")
		}
		c.evictionWarn = warn
		return nil
	}
}

// WithMaxHold caps auto-extension: a lock is never renewed so that Until
// would move past d after KeepAlive was called (for Do: after acquisition).
// The lock then runs out, and its loss is signalled as usual at Until minus
// the loss margin, with an error matching ErrLockLost that names the cap; so
// a lock is kept alive for at most d. The default (no option) is no limit:
// a holder that hangs keeps its lock as long as its process lives, as with
// an etcd session, so set a cap when a stuck holder must not block others
// forever. d must be positive.
func WithMaxHold(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("redlock: WithMaxHold(%v): want a positive duration", d)
		}
		c.maxHold = d
		return nil
	}
}

// WithStrictEvictionPolicy refuses, at first contact, every node whose
// maxmemory-policy can evict lock keys: such a node never counts toward a
// quorum, and operations report it as a *NodeError wrapping
// ErrEvictionPolicy. The warning of WithEvictionWarning is then not called.
// Only noeviction (the Redis default) is accepted; nodes whose INFO does not
// report a policy are accepted. The policy is read once per node: changing it
// with CONFIG SET later goes unnoticed.
func WithStrictEvictionPolicy() Option {
	return func(c *config) error {
		c.evictionStrict = true
		return nil
	}
}

// warnEviction is the default eviction warning.
func warnEviction(addr, policy string) {
	slog.Default().Warn("redlock: node's maxmemory-policy can evict lock keys and let a second holder in; set maxmemory-policy noeviction",
		"node", addr, "maxmemory_policy", policy)
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

// lossMarginFor returns the loss margin of auto-extension for ttl.
func (c *config) lossMarginFor(ttl time.Duration) time.Duration {
	if c.lossMargin > 0 {
		return c.lossMargin
	}
	return LossMargin(ttl, c.nodeTimeoutFor(ttl))
}
